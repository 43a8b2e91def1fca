"""Channels: how a finished message leaves Tidings. One interface (`base.Transport`) with
real implementations (SMTP, the built-in catcher) and a fake for tests that ships in the
package."""
