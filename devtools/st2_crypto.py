"""StackStorm's datastore encryption, for the local datastore of devtools/local_runner.py.

Follows st2common/st2common/util/crypto.py of StackStorm 3.9.0 (unchanged on master), Apache-2.0
(StackStorm's licence; copyright The StackStorm Authors and Extreme Networks). Only the
cryptography-based functions are kept: AES-256-CBC with PKCS#5 padding and an HMAC-SHA1
signature over a keyczar-compatible message (5-byte header, IV, ciphertext), written as upper-case
hex. The errors are st2's: decrypting a value that is not ciphertext raises binascii.Error
("Non-hexadecimal digit found", "Odd-length string"), a value signed with another key raises
cryptography's InvalidSignature, a value too short ValueError.

It lives in devtools, not in devtools/st2_standin, because the local runner needs it whether or
not the real st2common is importable.
"""

import base64
import binascii
import json
import os

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["AESKey", "read_crypto_key", "symmetric_encrypt", "symmetric_decrypt"]

KEYCZAR_HEADER_SIZE = 5
KEYCZAR_AES_BLOCK_SIZE = 16
KEYCZAR_HLEN = 20  # SHA-1 digest size
MINIMUM_AES_KEY_SIZE = 128
DEFAULT_AES_KEY_SIZE = 256


class AESKey(object):
    """An AES key with its HMAC key, as st2's keyczar-format key file holds them."""

    def __init__(self, aes_key_string, hmac_key_string, hmac_key_size, mode="CBC",
                 size=DEFAULT_AES_KEY_SIZE):
        if mode not in ["CBC"]:
            raise ValueError("Unsupported mode: %s" % (mode))
        if size < MINIMUM_AES_KEY_SIZE:
            raise ValueError("Unsafe key size: %s" % (size))
        self.aes_key_string = aes_key_string
        self.hmac_key_string = hmac_key_string
        self.hmac_key_size = int(hmac_key_size)
        self.mode = mode.upper()
        self.size = int(size)
        self.hmac_key_bytes = Base64WSDecode(self.hmac_key_string)
        self.aes_key_bytes = Base64WSDecode(self.aes_key_string)

    @classmethod
    def generate(cls, key_size=DEFAULT_AES_KEY_SIZE):
        if key_size < MINIMUM_AES_KEY_SIZE:
            raise ValueError("Unsafe key size: %s" % (key_size))
        aes_key_string = Base64WSEncode(os.urandom(int(key_size / 8)))
        hmac_key_string = Base64WSEncode(os.urandom(int(key_size / 8)))
        return cls(aes_key_string=aes_key_string, hmac_key_string=hmac_key_string,
                   hmac_key_size=key_size, mode="CBC", size=key_size)

    def to_json(self):
        """The keyczar JSON key file format st2 reads from [keyvalue] encryption_key_path."""
        return json.dumps({"hmacKey": {"hmacKeyString": self.hmac_key_string,
                                       "size": self.hmac_key_size},
                           "aesKeyString": self.aes_key_string, "mode": self.mode.upper(),
                           "size": int(self.size)})

    def __repr__(self):
        return "<AESKey hmac_key_size=%s,mode=%s,size=%s>" % (self.hmac_key_size, self.mode,
                                                              self.size)


def read_crypto_key(key_path):
    with open(key_path, "r") as fp:
        content = json.loads(fp.read())
    try:
        return AESKey(aes_key_string=content["aesKeyString"],
                      hmac_key_string=content["hmacKey"]["hmacKeyString"],
                      hmac_key_size=content["hmacKey"]["size"],
                      mode=content["mode"].upper(), size=content["size"])
    except KeyError as e:
        raise KeyError('Invalid or malformed key file "%s": %s' % (key_path, e))


def symmetric_encrypt(encrypt_key, plaintext):
    """Hex ciphertext (bytes, upper case) of plaintext, as st2's symmetric_encrypt returns it."""
    if not isinstance(encrypt_key, AESKey):
        raise TypeError("Encrypted key needs to be an AESkey class instance"
                        " (was %s)." % type(encrypt_key))
    if not isinstance(plaintext, (str, bytes)):
        raise TypeError("Plaintext needs to either be a string/unicode or bytes"
                        " (was %s)." % type(plaintext))
    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
    data = pkcs5_pad(data)
    iv_bytes = os.urandom(KEYCZAR_AES_BLOCK_SIZE)
    encryptor = Cipher(algorithms.AES(encrypt_key.aes_key_bytes), modes.CBC(iv_bytes)).encryptor()
    # keyczar's header: only its length matters, so st2 writes five zeros.
    header_bytes = b"00000"
    ciphertext_bytes = encryptor.update(data) + encryptor.finalize()
    msg_bytes = header_bytes + iv_bytes + ciphertext_bytes
    signature = hmac.HMAC(encrypt_key.hmac_key_bytes, hashes.SHA1())
    signature.update(msg_bytes)
    return binascii.hexlify(msg_bytes + signature.finalize()).upper()


def symmetric_decrypt(decrypt_key, ciphertext):
    """The plaintext (str) of hex ciphertext made by symmetric_encrypt with the same key."""
    if not isinstance(decrypt_key, AESKey):
        raise TypeError("Decrypted key needs to be an AESKey class instance"
                        " (was %s)." % type(decrypt_key))
    if not isinstance(ciphertext, (str, bytes)):
        raise TypeError("Ciphertext needs to either be a string/unicode or bytes"
                        " (was %s)." % type(ciphertext))
    ciphertext = binascii.unhexlify(ciphertext)
    data_bytes = ciphertext[KEYCZAR_HEADER_SIZE:]
    if len(data_bytes) < (KEYCZAR_AES_BLOCK_SIZE + KEYCZAR_HLEN):
        raise ValueError("Invalid or malformed ciphertext (too short)")
    iv_bytes = data_bytes[:KEYCZAR_AES_BLOCK_SIZE]
    ciphertext_bytes = data_bytes[KEYCZAR_AES_BLOCK_SIZE:-KEYCZAR_HLEN]
    signature_bytes = data_bytes[-KEYCZAR_HLEN:]
    signature = hmac.HMAC(decrypt_key.hmac_key_bytes, hashes.SHA1())
    signature.update(ciphertext[:-KEYCZAR_HLEN])
    signature.verify(signature_bytes)
    decryptor = Cipher(algorithms.AES(decrypt_key.aes_key_bytes), modes.CBC(iv_bytes)).decryptor()
    return pkcs5_unpad(decryptor.update(ciphertext_bytes) + decryptor.finalize())


def pkcs5_pad(data):
    pad = KEYCZAR_AES_BLOCK_SIZE - len(data) % KEYCZAR_AES_BLOCK_SIZE
    return data + pad * chr(pad).encode("utf-8")


def pkcs5_unpad(data):
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    pad = ord(data[-1])
    return data[:-pad]


def Base64WSEncode(s):  # pylint: disable=invalid-name
    """Web-safe base64 without padding (keyczar's, as st2 keeps it)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return base64.urlsafe_b64encode(s).decode("utf-8").replace("=", "")


def Base64WSDecode(s):  # pylint: disable=invalid-name
    s = "".join(s.splitlines())
    s = str(s.replace(" ", ""))
    d = len(s) % 4
    if d == 1:
        raise ValueError("Base64 decoding errors")
    if d == 2:
        s += "=="
    elif d == 3:
        s += "="
    try:
        return base64.urlsafe_b64decode(s)
    except TypeError as e:
        raise ValueError("Base64 decoding error: %s" % (e,))
