//! The configured keys: which kind of key each allowed algorithm verifies
//! with, and turning the configured text (a shared secret, or a PEM public
//! key given as its text or as the path of a file) into jsonwebtoken's key.
//! A key that could never verify a token of the configured algorithm is
//! refused at start with what is wrong with it in words (PEM label, key
//! type, curve, RSA size), never later as an unexplained `401`.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey};
use simple_asn1::{oid, ASN1Block};

use super::{JwtConfigError, KeyName};

/// The kind of key an algorithm verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// HMAC: the configured text is the shared secret.
    Secret,
    Public(PublicKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PublicKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// The allow-list, by the names tokens carry in `alg`. Algorithms
/// jsonwebtoken knows beyond these (PS384, PS512) are left out until someone
/// needs them; `none` is not an algorithm here at all.
pub(super) const ALGORITHMS: [(&str, Algorithm, KeyKind); 10] = [
    ("HS256", Algorithm::HS256, KeyKind::Secret),
    ("HS384", Algorithm::HS384, KeyKind::Secret),
    ("HS512", Algorithm::HS512, KeyKind::Secret),
    ("RS256", Algorithm::RS256, KeyKind::Public(PublicKind::Rsa)),
    ("RS384", Algorithm::RS384, KeyKind::Public(PublicKind::Rsa)),
    ("RS512", Algorithm::RS512, KeyKind::Public(PublicKind::Rsa)),
    ("PS256", Algorithm::PS256, KeyKind::Public(PublicKind::Rsa)),
    (
        "ES256",
        Algorithm::ES256,
        KeyKind::Public(PublicKind::EcP256),
    ),
    (
        "ES384",
        Algorithm::ES384,
        KeyKind::Public(PublicKind::EcP384),
    ),
    (
        "EdDSA",
        Algorithm::EdDSA,
        KeyKind::Public(PublicKind::Ed25519),
    ),
];

pub(super) fn algorithm_names() -> String {
    ALGORITHMS.map(|(name, ..)| name).join(", ")
}

// Public keys are inspected here (PEM label, key type, curve, RSA size) only
// to explain a wrong key in words at start, with the `pem` and `simple_asn1`
// crates jsonwebtoken itself reads keys with; the key jsonwebtoken verifies
// with is parsed by jsonwebtoken from the same PEM text.

/// Turns a configured key into the key that verifies `algorithm`'s tokens.
pub(super) fn load_key(
    key: KeyName,
    algorithm: &'static str,
    kind: KeyKind,
    text: &str,
) -> Result<DecodingKey, JwtConfigError> {
    if text.trim().is_empty() {
        return Err(JwtConfigError::EmptyKey(key));
    }
    let kind = match kind {
        // A PEM text as an HMAC secret is the setup of the algorithm
        // confusion attack (the public key, known to all, signs tokens):
        // refuse it rather than guess.
        KeyKind::Secret if text.contains("-----BEGIN") => {
            return Err(JwtConfigError::PemKeyForHmac { key, algorithm })
        }
        KeyKind::Secret => return Ok(DecodingKey::from_secret(text.as_bytes())),
        KeyKind::Public(kind) => kind,
    };
    let pem = if text.contains("-----BEGIN") {
        // Environment variables and `.env` files often carry a PEM on one
        // line, with its line breaks written `\n`.
        if text.contains('\n') {
            text.to_owned()
        } else {
            text.replace("\\n", "\n")
        }
    } else {
        let path = text.trim();
        std::fs::read_to_string(path).map_err(|source| JwtConfigError::KeyFile {
            key,
            algorithm,
            path: path.to_owned(),
            source,
        })?
    };
    let invalid = |reason: String| JwtConfigError::InvalidKey {
        key,
        algorithm,
        reason,
    };
    let block = pem::parse(&pem).map_err(|e| invalid(pem_error(e)))?;
    kind.check(&block).map_err(invalid)?;
    // jsonwebtoken reads the same first block of the text.
    let pem = pem.as_bytes();
    match kind {
        PublicKind::Rsa => DecodingKey::from_rsa_pem(pem),
        PublicKind::EcP256 | PublicKind::EcP384 => DecodingKey::from_ec_pem(pem),
        PublicKind::Ed25519 => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|e| invalid(format!("the key does not parse: {e}")))
}

impl PublicKind {
    fn describe(self) -> &'static str {
        match self {
            PublicKind::Rsa => "an RSA key",
            PublicKind::EcP256 => "an EC P-256 key",
            PublicKind::EcP384 => "an EC P-384 key",
            PublicKind::Ed25519 => "an Ed25519 key",
        }
    }

    /// Whether the PEM block is a public key of this kind. ring, under
    /// jsonwebtoken, verifies RSA signatures with 2048- to 8192-bit keys
    /// only, and ECDSA with the curve the algorithm names.
    fn check(self, block: &pem::Pem) -> Result<(), String> {
        let found = match block.tag() {
            "PUBLIC KEY" => PublicKeyInfo::from_spki(block.contents())?,
            "RSA PUBLIC KEY" => PublicKeyInfo::Rsa {
                bits: rsa_modulus_bits(block.contents())
                    .ok_or("the RSA public key does not parse")?,
            },
            label if label.contains("PRIVATE KEY") => {
                return Err("it is a private key; the hub needs only the public key \
                     (`openssl pkey -in key.pem -pubout`)"
                    .to_owned())
            }
            "CERTIFICATE" => {
                return Err("it is a certificate; give the hub its public key \
                     (`openssl x509 -in cert.pem -pubkey -noout`)"
                    .to_owned())
            }
            label => return Err(format!("a `{label}` PEM block is not a public key")),
        };
        match (self, found) {
            (PublicKind::Rsa, PublicKeyInfo::Rsa { bits }) if (2048..=8192).contains(&bits) => {
                Ok(())
            }
            (PublicKind::Rsa, PublicKeyInfo::Rsa { bits }) => Err(format!(
                "the RSA key has {bits} bits; RSA signatures are verified with keys of 2048 to 8192 bits"
            )),
            (PublicKind::EcP256 | PublicKind::EcP384, PublicKeyInfo::Ec(Some(curve)))
                if curve == self =>
            {
                Ok(())
            }
            (PublicKind::Ed25519, PublicKeyInfo::Ed25519) => Ok(()),
            (_, found) => Err(format!("it is {found}, not {}", self.describe())),
        }
    }
}

/// What a public key is, as far as choosing an algorithm goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PublicKeyInfo {
    Rsa {
        bits: usize,
    },
    /// An EC key; `None` when on a curve no allowed algorithm uses.
    Ec(Option<PublicKind>),
    Ed25519,
    Other,
}

impl fmt::Display for PublicKeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublicKeyInfo::Rsa { .. } => "an RSA key",
            PublicKeyInfo::Ec(Some(curve)) => curve.describe(),
            PublicKeyInfo::Ec(None) => "an EC key on a curve other than P-256 and P-384",
            PublicKeyInfo::Ed25519 => "an Ed25519 key",
            PublicKeyInfo::Other => "a key of a type no allowed algorithm uses",
        })
    }
}

impl PublicKeyInfo {
    /// Reads a SubjectPublicKeyInfo (RFC 5280 §4.1): `SEQUENCE { SEQUENCE {
    /// algorithm OID, parameters }, BIT STRING key }`.
    fn from_spki(der: &[u8]) -> Result<PublicKeyInfo, String> {
        let malformed = || "the public key does not parse".to_owned();
        let blocks = simple_asn1::from_der(der)
            .map_err(|e| format!("the public key does not parse: {e}"))?;
        let Some(ASN1Block::Sequence(_, spki)) = blocks.first() else {
            return Err(malformed());
        };
        let (Some(ASN1Block::Sequence(_, algorithm)), Some(ASN1Block::BitString(_, bits, key))) =
            (spki.first(), spki.get(1))
        else {
            return Err(malformed());
        };
        let Some(ASN1Block::ObjectIdentifier(_, oid)) = algorithm.first() else {
            return Err(malformed());
        };
        // A key is a whole number of bytes.
        if *bits != key.len() * 8 {
            return Err(malformed());
        }
        Ok(if *oid == oid!(1, 2, 840, 113549, 1, 1, 1) {
            // rsaEncryption
            PublicKeyInfo::Rsa {
                bits: rsa_modulus_bits(key).ok_or_else(malformed)?,
            }
        } else if *oid == oid!(1, 2, 840, 10045, 2, 1) {
            // id-ecPublicKey, with the curve as its parameter.
            PublicKeyInfo::Ec(match algorithm.get(1) {
                Some(ASN1Block::ObjectIdentifier(_, curve))
                    if *curve == oid!(1, 2, 840, 10045, 3, 1, 7) =>
                {
                    Some(PublicKind::EcP256)
                }
                Some(ASN1Block::ObjectIdentifier(_, curve)) if *curve == oid!(1, 3, 132, 0, 34) => {
                    Some(PublicKind::EcP384)
                }
                _ => None,
            })
        } else if *oid == oid!(1, 3, 101, 112) {
            // id-Ed25519
            PublicKeyInfo::Ed25519
        } else {
            PublicKeyInfo::Other
        })
    }
}

/// The size of an RSA key from its PKCS#1 form, `SEQUENCE { INTEGER n,
/// INTEGER e }`.
pub(super) fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let blocks = simple_asn1::from_der(pkcs1).ok()?;
    let Some(ASN1Block::Sequence(_, fields)) = blocks.first() else {
        return None;
    };
    let Some(ASN1Block::Integer(_, modulus)) = fields.first() else {
        return None;
    };
    // `None` for a negative modulus.
    let bits = modulus.to_biguint()?.bits();
    usize::try_from(bits).ok().filter(|&bits| bits > 0)
}

/// Why the configured key text is not one PEM block, in words.
pub(super) fn pem_error(error: pem::PemError) -> String {
    match error {
        pem::PemError::MalformedFraming => {
            "it is not PEM: no `-----BEGIN ...-----` line followed by its `-----END ...-----` line"
                .to_owned()
        }
        pem::PemError::MismatchedTags(begin, end) => {
            format!("the `-----BEGIN {begin}-----` line is closed by `-----END {end}-----`")
        }
        pem::PemError::InvalidData(_) => "the PEM body is not base64".to_owned(),
        other => format!("the PEM block does not parse: {other}"),
    }
}
