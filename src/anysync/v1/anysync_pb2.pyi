from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PackState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACK_LIVE: _ClassVar[PackState]
    PACK_CONDEMNED: _ClassVar[PackState]
    PACK_REAPING: _ClassVar[PackState]
PACK_LIVE: PackState
PACK_CONDEMNED: PackState
PACK_REAPING: PackState

class KdfParams(_message.Message):
    __slots__ = ("salt", "log_n", "r", "p")
    SALT_FIELD_NUMBER: _ClassVar[int]
    LOG_N_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    salt: bytes
    log_n: int
    r: int
    p: int
    def __init__(self, salt: _Optional[bytes] = ..., log_n: _Optional[int] = ..., r: _Optional[int] = ..., p: _Optional[int] = ...) -> None: ...

class PreLoginRequest(_message.Message):
    __slots__ = ("email",)
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    email: str
    def __init__(self, email: _Optional[str] = ...) -> None: ...

class PreLoginResponse(_message.Message):
    __slots__ = ("kdf",)
    KDF_FIELD_NUMBER: _ClassVar[int]
    kdf: KdfParams
    def __init__(self, kdf: _Optional[_Union[KdfParams, _Mapping]] = ...) -> None: ...

class SignupRequest(_message.Message):
    __slots__ = ("email", "invite", "user_id", "kdf", "login_secret", "master_keys", "device_name", "device_public_key")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    INVITE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KDF_FIELD_NUMBER: _ClassVar[int]
    LOGIN_SECRET_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    email: str
    invite: str
    user_id: str
    kdf: KdfParams
    login_secret: bytes
    master_keys: bytes
    device_name: str
    device_public_key: bytes
    def __init__(self, email: _Optional[str] = ..., invite: _Optional[str] = ..., user_id: _Optional[str] = ..., kdf: _Optional[_Union[KdfParams, _Mapping]] = ..., login_secret: _Optional[bytes] = ..., master_keys: _Optional[bytes] = ..., device_name: _Optional[str] = ..., device_public_key: _Optional[bytes] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("email", "login_secret", "device_name", "device_public_key")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    LOGIN_SECRET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    email: str
    login_secret: bytes
    device_name: str
    device_public_key: bytes
    def __init__(self, email: _Optional[str] = ..., login_secret: _Optional[bytes] = ..., device_name: _Optional[str] = ..., device_public_key: _Optional[bytes] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("user_id", "device_id", "sealed_token", "master_keys", "kdf")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    KDF_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: int
    sealed_token: bytes
    master_keys: bytes
    kdf: KdfParams
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[int] = ..., sealed_token: _Optional[bytes] = ..., master_keys: _Optional[bytes] = ..., kdf: _Optional[_Union[KdfParams, _Mapping]] = ...) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("old_login_secret", "new_login_secret", "new_kdf", "new_master_keys")
    OLD_LOGIN_SECRET_FIELD_NUMBER: _ClassVar[int]
    NEW_LOGIN_SECRET_FIELD_NUMBER: _ClassVar[int]
    NEW_KDF_FIELD_NUMBER: _ClassVar[int]
    NEW_MASTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    old_login_secret: bytes
    new_login_secret: bytes
    new_kdf: KdfParams
    new_master_keys: bytes
    def __init__(self, old_login_secret: _Optional[bytes] = ..., new_login_secret: _Optional[bytes] = ..., new_kdf: _Optional[_Union[KdfParams, _Mapping]] = ..., new_master_keys: _Optional[bytes] = ...) -> None: ...

class ChangePasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "name", "created_at", "last_seen_at", "revoked", "current", "rights")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    created_at: int
    last_seen_at: int
    revoked: bool
    current: bool
    rights: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., created_at: _Optional[int] = ..., last_seen_at: _Optional[int] = ..., revoked: _Optional[bool] = ..., current: _Optional[bool] = ..., rights: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class RevokeDeviceRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: int
    def __init__(self, device_id: _Optional[int] = ...) -> None: ...

class RevokeDeviceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenameDeviceRequest(_message.Message):
    __slots__ = ("device_id", "name")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    device_id: int
    name: str
    def __init__(self, device_id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class RenameDeviceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetDeviceRightsRequest(_message.Message):
    __slots__ = ("device_id", "rights")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    device_id: int
    rights: str
    def __init__(self, device_id: _Optional[int] = ..., rights: _Optional[str] = ...) -> None: ...

class SetDeviceRightsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ElevateRequest(_message.Message):
    __slots__ = ("login_secret",)
    LOGIN_SECRET_FIELD_NUMBER: _ClassVar[int]
    login_secret: bytes
    def __init__(self, login_secret: _Optional[bytes] = ...) -> None: ...

class ElevateResponse(_message.Message):
    __slots__ = ("elevated_until",)
    ELEVATED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    elevated_until: int
    def __init__(self, elevated_until: _Optional[int] = ...) -> None: ...

class WhoamiRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoamiResponse(_message.Message):
    __slots__ = ("user_id", "email", "device_id", "used_bytes", "quota_bytes", "master_keys", "kdf", "rights", "elevated_until", "gc_generation", "ref_seq", "condemned_bytes", "grace_seconds", "min_pack_age_seconds")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    KDF_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    ELEVATED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    GC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    CONDEMNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_PACK_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    device_id: int
    used_bytes: int
    quota_bytes: int
    master_keys: bytes
    kdf: KdfParams
    rights: str
    elevated_until: int
    gc_generation: int
    ref_seq: int
    condemned_bytes: int
    grace_seconds: int
    min_pack_age_seconds: int
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ..., device_id: _Optional[int] = ..., used_bytes: _Optional[int] = ..., quota_bytes: _Optional[int] = ..., master_keys: _Optional[bytes] = ..., kdf: _Optional[_Union[KdfParams, _Mapping]] = ..., rights: _Optional[str] = ..., elevated_until: _Optional[int] = ..., gc_generation: _Optional[int] = ..., ref_seq: _Optional[int] = ..., condemned_bytes: _Optional[int] = ..., grace_seconds: _Optional[int] = ..., min_pack_age_seconds: _Optional[int] = ...) -> None: ...

class BlobLocation(_message.Message):
    __slots__ = ("blob_id", "pack_id", "offset", "length")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    blob_id: bytes
    pack_id: bytes
    offset: int
    length: int
    def __init__(self, blob_id: _Optional[bytes] = ..., pack_id: _Optional[bytes] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class FindBlobsRequest(_message.Message):
    __slots__ = ("blob_ids",)
    BLOB_IDS_FIELD_NUMBER: _ClassVar[int]
    blob_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, blob_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FindBlobsResponse(_message.Message):
    __slots__ = ("found", "gc_generation")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    GC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    found: _containers.RepeatedCompositeFieldContainer[BlobLocation]
    gc_generation: int
    def __init__(self, found: _Optional[_Iterable[_Union[BlobLocation, _Mapping]]] = ..., gc_generation: _Optional[int] = ...) -> None: ...

class PackEntry(_message.Message):
    __slots__ = ("blob_id", "offset", "length")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    blob_id: bytes
    offset: int
    length: int
    def __init__(self, blob_id: _Optional[bytes] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class PackHeader(_message.Message):
    __slots__ = ("size", "sha256", "entries", "maintenance")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_FIELD_NUMBER: _ClassVar[int]
    size: int
    sha256: bytes
    entries: _containers.RepeatedCompositeFieldContainer[PackEntry]
    maintenance: bool
    def __init__(self, size: _Optional[int] = ..., sha256: _Optional[bytes] = ..., entries: _Optional[_Iterable[_Union[PackEntry, _Mapping]]] = ..., maintenance: _Optional[bool] = ...) -> None: ...

class UploadPackRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PackHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[PackHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadPackResponse(_message.Message):
    __slots__ = ("pack_id", "stored_bytes")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    pack_id: bytes
    stored_bytes: int
    def __init__(self, pack_id: _Optional[bytes] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class ReadPackRequest(_message.Message):
    __slots__ = ("pack_id", "offset", "length")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    pack_id: bytes
    offset: int
    length: int
    def __init__(self, pack_id: _Optional[bytes] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ReadPackResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Ref(_message.Message):
    __slots__ = ("name", "commit_id", "version", "updated_at", "updated_by_device")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_DEVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    commit_id: bytes
    version: int
    updated_at: int
    updated_by_device: int
    def __init__(self, name: _Optional[str] = ..., commit_id: _Optional[bytes] = ..., version: _Optional[int] = ..., updated_at: _Optional[int] = ..., updated_by_device: _Optional[int] = ...) -> None: ...

class ListRefsRequest(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class ListRefsResponse(_message.Message):
    __slots__ = ("refs", "ref_seq")
    REFS_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[Ref]
    ref_seq: int
    def __init__(self, refs: _Optional[_Iterable[_Union[Ref, _Mapping]]] = ..., ref_seq: _Optional[int] = ...) -> None: ...

class GetRefRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateRefRequest(_message.Message):
    __slots__ = ("name", "expected_version", "commit_id", "gc_generation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ID_FIELD_NUMBER: _ClassVar[int]
    GC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_version: int
    commit_id: bytes
    gc_generation: int
    def __init__(self, name: _Optional[str] = ..., expected_version: _Optional[int] = ..., commit_id: _Optional[bytes] = ..., gc_generation: _Optional[int] = ...) -> None: ...

class WatchRefsRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class BeginUploadRequest(_message.Message):
    __slots__ = ("header", "md5")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    header: PackHeader
    md5: bytes
    def __init__(self, header: _Optional[_Union[PackHeader, _Mapping]] = ..., md5: _Optional[bytes] = ...) -> None: ...

class BeginUploadResponse(_message.Message):
    __slots__ = ("direct", "pack_id", "url", "expires_at")
    DIRECT_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    direct: bool
    pack_id: bytes
    url: str
    expires_at: int
    def __init__(self, direct: _Optional[bool] = ..., pack_id: _Optional[bytes] = ..., url: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class CommitUploadRequest(_message.Message):
    __slots__ = ("pack_id",)
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    pack_id: bytes
    def __init__(self, pack_id: _Optional[bytes] = ...) -> None: ...

class GetPackUrlRequest(_message.Message):
    __slots__ = ("pack_id",)
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    pack_id: bytes
    def __init__(self, pack_id: _Optional[bytes] = ...) -> None: ...

class GetPackUrlResponse(_message.Message):
    __slots__ = ("direct", "url", "expires_at", "size")
    DIRECT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    direct: bool
    url: str
    expires_at: int
    size: int
    def __init__(self, direct: _Optional[bool] = ..., url: _Optional[str] = ..., expires_at: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class PackInfo(_message.Message):
    __slots__ = ("pack_id", "size", "charged", "created_at", "state", "condemned_at", "entries")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONDEMNED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    pack_id: bytes
    size: int
    charged: int
    created_at: int
    state: PackState
    condemned_at: int
    entries: _containers.RepeatedCompositeFieldContainer[PackEntry]
    def __init__(self, pack_id: _Optional[bytes] = ..., size: _Optional[int] = ..., charged: _Optional[int] = ..., created_at: _Optional[int] = ..., state: _Optional[_Union[PackState, str]] = ..., condemned_at: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[PackEntry, _Mapping]]] = ...) -> None: ...

class ListPacksRequest(_message.Message):
    __slots__ = ("include_entries", "include_condemned")
    INCLUDE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONDEMNED_FIELD_NUMBER: _ClassVar[int]
    include_entries: bool
    include_condemned: bool
    def __init__(self, include_entries: _Optional[bool] = ..., include_condemned: _Optional[bool] = ...) -> None: ...

class ListPacksResponse(_message.Message):
    __slots__ = ("gc_generation", "ref_seq", "packs")
    GC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    PACKS_FIELD_NUMBER: _ClassVar[int]
    gc_generation: int
    ref_seq: int
    packs: _containers.RepeatedCompositeFieldContainer[PackInfo]
    def __init__(self, gc_generation: _Optional[int] = ..., ref_seq: _Optional[int] = ..., packs: _Optional[_Iterable[_Union[PackInfo, _Mapping]]] = ...) -> None: ...

class CondemnPacksRequest(_message.Message):
    __slots__ = ("pack_ids", "expected_generation", "expected_ref_seq")
    PACK_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    pack_ids: _containers.RepeatedScalarFieldContainer[bytes]
    expected_generation: int
    expected_ref_seq: int
    def __init__(self, pack_ids: _Optional[_Iterable[bytes]] = ..., expected_generation: _Optional[int] = ..., expected_ref_seq: _Optional[int] = ...) -> None: ...

class CondemnPacksResponse(_message.Message):
    __slots__ = ("gc_generation", "condemned", "skipped_young", "condemned_bytes", "reap_at")
    GC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONDEMNED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_YOUNG_FIELD_NUMBER: _ClassVar[int]
    CONDEMNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    REAP_AT_FIELD_NUMBER: _ClassVar[int]
    gc_generation: int
    condemned: int
    skipped_young: int
    condemned_bytes: int
    reap_at: int
    def __init__(self, gc_generation: _Optional[int] = ..., condemned: _Optional[int] = ..., skipped_young: _Optional[int] = ..., condemned_bytes: _Optional[int] = ..., reap_at: _Optional[int] = ...) -> None: ...

class RefVersion(_message.Message):
    __slots__ = ("name", "version", "commit_id", "seq", "device_id", "by_manage", "at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    BY_MANAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    commit_id: bytes
    seq: int
    device_id: int
    by_manage: bool
    at: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., commit_id: _Optional[bytes] = ..., seq: _Optional[int] = ..., device_id: _Optional[int] = ..., by_manage: _Optional[bool] = ..., at: _Optional[int] = ...) -> None: ...

class ListRefHistoryRequest(_message.Message):
    __slots__ = ("name", "after_seq", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_seq: int
    limit: int
    def __init__(self, name: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRefHistoryResponse(_message.Message):
    __slots__ = ("versions", "ref_seq")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[RefVersion]
    ref_seq: int
    def __init__(self, versions: _Optional[_Iterable[_Union[RefVersion, _Mapping]]] = ..., ref_seq: _Optional[int] = ...) -> None: ...

class RepairIndexRequest(_message.Message):
    __slots__ = ("pack_id", "entries", "expected_generation")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    pack_id: bytes
    entries: _containers.RepeatedCompositeFieldContainer[PackEntry]
    expected_generation: int
    def __init__(self, pack_id: _Optional[bytes] = ..., entries: _Optional[_Iterable[_Union[PackEntry, _Mapping]]] = ..., expected_generation: _Optional[int] = ...) -> None: ...

class RepairIndexResponse(_message.Message):
    __slots__ = ("added", "removed", "gc_generation")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    GC_GENERATION_FIELD_NUMBER: _ClassVar[int]
    added: int
    removed: int
    gc_generation: int
    def __init__(self, added: _Optional[int] = ..., removed: _Optional[int] = ..., gc_generation: _Optional[int] = ...) -> None: ...
