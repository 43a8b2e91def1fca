"""Contacts: profiles, identity, lists and consent, import and export."""
