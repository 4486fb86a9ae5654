//! Keys, tokens and certificates made by `crypto_tool.py` (PyJWT and `cryptography`, installed by
//! scripts/ensure-pyjwt.sh): an outside OIDC issuer and a test CA that share no code with kinetic.

use std::path::Path;
use std::process::Command;

/// The Python of the PyJWT virtualenv.
fn python() -> String {
    std::env::var("KINETIC_PYJWT_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/kinetic-pyjwt/bin/python")
    })
}

/// Runs the tool; its standard output, trimmed.
pub fn tool(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/crypto_tool.py");
    let output = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("PyJWT is needed for this test (run scripts/ensure-pyjwt.sh): {e}")
        });
    assert!(
        output.status.success(),
        "crypto_tool.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// RSA, P-256 and Ed25519 keys in `dir`, published in `dir/jwks.json`.
pub fn jwt_keys(dir: &Path) {
    tool(&["jwt-keys", dir.to_str().unwrap()]);
}

/// New keys in `dir` under key ids starting with `prefix`, replacing `dir/jwks.json` (a rotation).
pub fn jwt_rotate(dir: &Path, prefix: &str) {
    tool(&["jwt-keys", dir.to_str().unwrap(), prefix]);
}

/// A token signed with `dir`'s key for `alg`.
pub fn jwt_sign(dir: &Path, alg: &str, claims: &serde_json::Value) -> String {
    tool(&["jwt-sign", dir.to_str().unwrap(), alg, &claims.to_string()])
}

/// `dir/ca.pem` (made once) and `dir/NAME.pem`/`NAME.key` for 127.0.0.1 and localhost; the new
/// certificate's serial number.
pub fn tls(dir: &Path, name: &str) -> String {
    tool(&["tls", dir.to_str().unwrap(), name])
}

/// The serial number of the certificate `address` serves, checked against `ca`.
pub fn served_serial(address: std::net::SocketAddr, ca: &Path) -> String {
    tool(&[
        "serial",
        &address.ip().to_string(),
        &address.port().to_string(),
        ca.to_str().unwrap(),
    ])
}

/// Verifies `token` as an outside OIDC client would (PyJWT reading `issuer`'s discovery document
/// and key set over HTTP); its claims.
pub fn jwt_verify(issuer: &str, audience: &str, token: &str) -> serde_json::Value {
    serde_json::from_str(&tool(&["jwt-verify", issuer, audience, token])).unwrap()
}
