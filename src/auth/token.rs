//! `peregrine token`: mints a bearer token from a local private key, and writes the JWKS
//! that verifies it, for development and tests. It is no identity provider: anyone with read
//! access to the key file can mint any token.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use rustls::pki_types::PrivateKeyDer;
use serde_json::json;

/// The settings of `peregrine token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// PEM file of the private key that signs the token: RSA (RS256), EC P-256 (ES256) or
    /// Ed25519 (EdDSA), in PKCS#8; RSA may also be PKCS#1.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Create the key file with a new EC P-256 key when it does not exist.
    #[arg(long)]
    pub generate_key: bool,

    /// Also write the JWKS with the key's public half to this file, for AUTH_JWKS_FILE.
    #[arg(long, value_name = "FILE")]
    pub jwks: Option<PathBuf>,

    /// The kid header, which the JWKS entry carries too.
    #[arg(long, default_value = "peregrine-dev")]
    pub kid: String,

    /// The sub claim: the id of the user the token acts for.
    #[arg(long)]
    pub sub: String,

    /// The scope claim: space-separated scopes among users:read, users:write and admin.
    #[arg(long, default_value = "users:read users:write")]
    pub scope: String,

    /// The iss claim.
    #[arg(long, env = "AUTH_ISSUER", default_value = "peregrine-dev")]
    pub issuer: String,

    /// The aud claim.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "peregrine")]
    pub audience: String,

    /// Time from now until the token expires (the exp claim).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// A private key with what the token and the JWKS need from it.
struct SigningKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public half as JWK members, without `kid`.
    public_jwk: serde_json::Value,
}

/// Runs `peregrine token`: prints the token on stdout.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    if args.generate_key && !args.key.exists() {
        generate_key(&args.key)?;
        eprintln!("wrote a new EC P-256 key to {}", args.key.display());
    }
    let pem = std::fs::read(&args.key)
        .with_context(|| format!("failed to read the key file {}", args.key.display()))?;
    let key = load_key(&pem)
        .with_context(|| format!("failed to load the key file {}", args.key.display()))?;

    if let Some(path) = &args.jwks {
        let mut jwk = key.public_jwk.clone();
        jwk["kid"] = json!(args.kid);
        jwk["use"] = json!("sig");
        let jwks = serde_json::to_string_pretty(&json!({ "keys": [jwk] }))?;
        std::fs::write(path, jwks + "\n")
            .with_context(|| format!("failed to write the JWKS to {}", path.display()))?;
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let claims = json!({
        "iss": args.issuer,
        "aud": args.audience,
        "sub": args.sub,
        "scope": args.scope,
        "iat": now,
        "nbf": now,
        "exp": now + args.ttl.as_secs(),
    });
    let mut header = Header::new(key.algorithm);
    header.kid = Some(args.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
        .context("failed to sign the token")?;
    println!("{token}");
    Ok(())
}

/// Reads a PEM private key and works out its algorithm from its type.
fn load_key(pem: &[u8]) -> anyhow::Result<SigningKey> {
    let der = rustls_pemfile::private_key(&mut &pem[..])
        .context("invalid PEM")?
        .context("no private key in the file")?;
    let rng = SystemRandom::new();
    let (algorithm, public_jwk) = match &der {
        PrivateKeyDer::Pkcs1(der) => {
            let pair = RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map_err(|err| anyhow::anyhow!("invalid RSA key: {err}"))?;
            (Algorithm::RS256, rsa_jwk(&pair))
        }
        PrivateKeyDer::Pkcs8(der) => {
            let der = der.secret_pkcs8_der();
            if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x });
                (Algorithm::EdDSA, jwk)
            } else if let Ok(pair) =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            {
                // An uncompressed point: 0x04, then x and y of 32 bytes each.
                let point = pair.public_key().as_ref();
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": "ES256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                });
                (Algorithm::ES256, jwk)
            } else if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
                (Algorithm::RS256, rsa_jwk(&pair))
            } else {
                bail!("the PKCS#8 key is not RSA, EC P-256 or Ed25519");
            }
        }
        PrivateKeyDer::Sec1(_) => bail!(
            "the key is in SEC1 form (BEGIN EC PRIVATE KEY); convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt`"
        ),
        _ => bail!("unsupported private key format"),
    };
    let encoding = match algorithm {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .context("jsonwebtoken rejected the key")?;
    Ok(SigningKey {
        algorithm,
        encoding,
        public_jwk,
    })
}

fn rsa_jwk(pair: &RsaKeyPair) -> serde_json::Value {
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({
        "kty": "RSA",
        "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(&public.n),
        "e": URL_SAFE_NO_PAD.encode(&public.e),
    })
}

/// Writes a new EC P-256 key to `path` as PKCS#8 PEM, readable by its owner only.
fn generate_key(path: &Path) -> anyhow::Result<()> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|err| anyhow::anyhow!("failed to generate a key: {err}"))?;
    let body = STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");

    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create the key file {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("failed to write the key file {}", path.display()))?;
    Ok(())
}
