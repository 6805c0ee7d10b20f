"""The review console: summaries reviewed, edited and approved in a browser."""
