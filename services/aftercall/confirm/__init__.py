"""The customer's written confirmation of a call: a letter drafted from the approved summary, sent by e-mail."""
