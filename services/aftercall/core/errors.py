"""Domain exceptions. The CLI maps `UserError` to exit code 2; the gRPC layer (later) maps them to status codes."""


class AftercallError(Exception):
    """Base of every error aftercall raises on purpose."""


class UserError(AftercallError):
    """Something the caller supplied is wrong: bad input, bad config. Never a bug of ours."""


class AudioFormatError(UserError):
    """Audio that is corrupt, truncated, empty or in a format outside the audio contract."""


class TranscriptFormatError(UserError):
    """A transcript JSON that does not follow the transcript schema."""


class ConfigError(UserError):
    """A config file or taxonomy that fails validation; the message names the key."""


class ModelIntegrityError(AftercallError):
    """A model file is missing or does not match its pinned sha256: refuse to run it."""
