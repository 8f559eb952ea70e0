"""Typed exceptions of the signing engine.

Every error carries an HTTP status (422 for bad input the caller must fix, 503 for an
unreachable external service) and whether a retry can succeed, plus an English and a
Vietnamese message so the API and the web UI can show the user's language.
"""

from __future__ import annotations


class SigningError(Exception):
    """Base class of every signing-engine error."""

    status_code: int = 422
    retryable: bool = False
    code: str = "signing_error"
    message_en: str = "The document could not be signed."
    message_vi: str = "Không thể ký văn bản."

    def __init__(self, detail: str | None = None, *, message_vi: str | None = None) -> None:
        self.detail = detail
        if message_vi is not None:
            self.message_vi = message_vi
        text = self.message_en if detail is None else f"{self.message_en} {detail}"
        super().__init__(f"{text} / {self.message_vi}")

    def to_dict(self) -> dict[str, object]:
        """Problem-details friendly representation (no secrets are ever put in errors)."""
        return {
            "code": self.code,
            "status": self.status_code,
            "retryable": self.retryable,
            "message_en": self.message_en,
            "message_vi": self.message_vi,
            "detail": self.detail,
        }


class BadInputError(SigningError):
    """The input document cannot be signed as it is."""

    code = "bad_input"


class NotAPdfError(BadInputError):
    code = "not_a_pdf"
    message_en = "The file is not a PDF document."
    message_vi = "Tệp không phải là văn bản PDF."


class BrokenPdfError(BadInputError):
    code = "broken_pdf"
    message_en = "The PDF file is damaged and cannot be read."
    message_vi = "Tệp PDF bị hỏng, không đọc được."


class EncryptedPdfError(BadInputError):
    code = "encrypted_pdf"
    message_en = "The PDF file is encrypted; remove the password protection before signing."
    message_vi = "Tệp PDF đã được mã hóa; hãy gỡ bỏ mật khẩu bảo vệ trước khi ký."


class SignaturesForbiddenError(BadInputError):
    code = "docmdp_forbids_signing"
    message_en = "The document is certified with 'no changes allowed'; it cannot be signed again."
    message_vi = "Văn bản đã được chứng thực ở chế độ không cho phép thay đổi; không thể ký thêm."


class SignerKeyError(BadInputError):
    """Problems with the key or certificate ."""

    code = "key_error"
    message_en = "The signing key cannot be used."
    message_vi = "Không sử dụng được khóa ký."


class WrongPassphraseError(SignerKeyError):
    code = "wrong_passphrase"
    message_en = "Wrong passphrase for the key file (or the file is not a PKCS#12 key file)."
    message_vi = "Sai mật khẩu của tệp khóa (hoặc tệp không phải tệp khóa PKCS#12)."


class KeyMismatchError(SignerKeyError):
    code = "key_certificate_mismatch"
    message_en = "The private key does not match the certificate."
    message_vi = "Khóa bí mật không khớp với chứng thư số."


class CertificateExpiredError(SignerKeyError):
    code = "certificate_expired"
    message_en = "The signer's certificate is expired or not yet valid."
    message_vi = "Chứng thư số của người ký đã hết hạn hoặc chưa có hiệu lực."


class CertificateRevokedError(SignerKeyError):
    code = "certificate_revoked"
    message_en = "The signer's certificate has been revoked."
    message_vi = "Chứng thư số của người ký đã bị thu hồi."


class CertificateUsageError(SignerKeyError):
    code = "certificate_key_usage"
    message_en = ("The certificate is not allowed for signatures "
                  "(no digitalSignature/nonRepudiation).")
    message_vi = "Chứng thư số không được phép dùng để ký (thiếu digitalSignature/nonRepudiation)."


class CertificateUntrustedError(SignerKeyError):
    code = "certificate_untrusted"
    message_en = "The signer's certificate does not chain to a trusted root."
    message_vi = "Chứng thư số của người ký không thuộc chuỗi tin cậy."


class TokenError(SignerKeyError):
    code = "token_error"
    message_en = "The PKCS#11 token or key could not be used."
    message_vi = "Không sử dụng được thiết bị ký (token/HSM) hoặc khóa trên đó."


class OrderError(BadInputError):
    code = "leader_signature_missing"
    message_en = ("The document has no present, intact and valid leader signature; "
                  "it cannot be issued.")
    message_vi = "Văn bản chưa có chữ ký hợp lệ của người có thẩm quyền; không thể phát hành."


class ExternalSignatureError(BadInputError):
    code = "external_signature_invalid"
    message_en = "The signature returned by the signing device is not valid for this document."
    message_vi = "Chữ ký do thiết bị ký trả về không hợp lệ với văn bản này."


class InvalidStateError(BadInputError):
    code = "invalid_two_step_state"
    message_en = "The saved signing state is invalid or does not belong to this file."
    message_vi = "Trạng thái ký đã lưu không hợp lệ hoặc không thuộc tệp này."


class ServiceUnavailableError(SigningError):
    """An external service the signature level needs is unreachable; retry later."""

    status_code = 503
    retryable = True
    code = "service_unavailable"
    message_en = "A required signing service is unreachable; try again later."
    message_vi = "Không kết nối được dịch vụ cần cho việc ký; vui lòng thử lại sau."


class TimestampUnavailableError(ServiceUnavailableError):
    code = "tsa_unavailable"
    message_en = "The timestamp authority (TSA) is unreachable; try again later."
    message_vi = "Không kết nối được máy chủ cấp dấu thời gian (TSA); vui lòng thử lại sau."


class RevocationUnavailableError(ServiceUnavailableError):
    code = "revocation_unavailable"
    message_en = "Revocation information (OCSP/CRL) is unreachable; try again later."
    message_vi = "Không lấy được thông tin thu hồi chứng thư (OCSP/CRL); vui lòng thử lại sau."
