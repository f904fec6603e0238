//! Keys in the formats the ecosystem reads: the real `openssl`
//! binary (OpenSSL 3.0 refuses the PKCS#8 v2 that ring writes) reads every
//! private key Duokey writes, and Duokey accepts CA and server keys that
//! `openssl genpkey` made, in a real TLS 1.3 handshake. `.ci/run` installs
//! openssl when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{exchange, spawn_server, terminal};
use duokey_pki::{Ca, ClientAuth, RevocationList, Role, client_config, pem, server_config};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// Runs `openssl ARGS` in `dir`; returns its standard output.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl binary is needed by this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn openssl_reads_every_key_duokey_writes_and_finds_the_certificates_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("Test Org").unwrap();
    ca.save(dir.path()).unwrap();
    ca.issue_server(&["127.0.0.1".into()], &[Role::Gms, Role::Cs], 30)
        .unwrap()
        .save(dir.path(), "server")
        .unwrap();
    for (key, cert) in [("ca.key", "ca.pem"), ("server.key", "server.pem")] {
        openssl(dir.path(), &["pkey", "-in", key, "-noout"]);
        let text = openssl(dir.path(), &["pkey", "-in", key, "-noout", "-text"]);
        assert!(text.contains("ED25519 Private-Key"), "{text}");
        // The key is the one the certificate names.
        assert_eq!(
            openssl(dir.path(), &["pkey", "-in", key, "-pubout"]),
            openssl(dir.path(), &["x509", "-in", cert, "-noout", "-pubkey"]),
            "{key}"
        );
    }
}

#[tokio::test]
async fn a_ca_and_a_server_key_made_by_openssl_work_in_a_real_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ca.key"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/O=Test Org/CN=OpenSSL CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        ],
    );
    // The CA key is read and signs terminal certificates.
    let ca = Ca::load_files(&d.join("ca.pem"), &d.join("ca.key")).expect("OpenSSL's CA key");

    openssl(
        d,
        &["genpkey", "-algorithm", "ed25519", "-out", "server.key"],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=127.0.0.1/OU=duokey-gms duokey-cs",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    // The server key is read and serves TLS 1.3 with its certificate.
    let config = server_config(
        &ca.cert_der(),
        pem::load_certs(&d.join("server.pem")).unwrap(),
        pem::load_key(&d.join("server.key")).expect("OpenSSL's server key"),
        ClientAuth::Required,
        Arc::new(RevocationList::empty()),
    )
    .unwrap();
    let srv = spawn_server(config).await;
    let (chain, key) = terminal(&ca, "alice");
    let client = client_config(&ca.cert_der(), Some((chain, key))).unwrap();
    let who = exchange(client, srv.addr, "127.0.0.1").await;
    assert_eq!(who.as_deref(), Ok("user alice"));
}
