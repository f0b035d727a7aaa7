from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RevokeRequest(_message.Message):
    __slots__ = ("jti", "exp")
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXP_FIELD_NUMBER: _ClassVar[int]
    jti: str
    exp: int
    def __init__(self, jti: _Optional[str] = ..., exp: _Optional[int] = ...) -> None: ...

class RevokeSubjectRequest(_message.Message):
    __slots__ = ("subject", "before")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    before: float
    def __init__(self, subject: _Optional[str] = ..., before: _Optional[float] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("epoch", "published", "kept_until")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    KEPT_UNTIL_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    published: bool
    kept_until: float
    def __init__(self, epoch: _Optional[int] = ..., published: _Optional[bool] = ..., kept_until: _Optional[float] = ...) -> None: ...

class IsRevokedRequest(_message.Message):
    __slots__ = ("jti", "subject", "issued_at")
    JTI_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    jti: str
    subject: str
    issued_at: float
    def __init__(self, jti: _Optional[str] = ..., subject: _Optional[str] = ..., issued_at: _Optional[float] = ...) -> None: ...

class IsRevokedResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...
