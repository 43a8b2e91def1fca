"""Tracking and consent: the signed tokens in links that leave Tidings, and the public
endpoints those links reach (open pixel, clicks, unsubscribe, preferences)."""
