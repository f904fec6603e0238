//! Password accounts (DESIGN D51, PROTOCOL §5.16): OPAQUE at the real AS over
//! TLS, the real terminal library and a group mixing a password account
//! with a certificate-enrolled one; wrong passwords refused, counted and
//! limited; a replayed login refused; a certificate request not bound to
//! the login refused; no server file holds the password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_crypto::UserId;
use duokey_crypto::password::{self, LoggingIn};
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::{PasswordLoginFinishRequest, PasswordLoginStartRequest};
use duokey_terminal::{Enrolment, Terminal};
use duokey_testkit::{LocalNet, texts};
use tonic::Code;

const PASSWORD: &str = "a long account password";

/// Enrols `name` as a password account with [`PASSWORD`].
async fn password_account(net: &LocalNet, name: &str) -> Terminal {
    let user = UserId::new(name).unwrap();
    let db = net.as_db().await;
    let issued = duokey_accounts::issue_password_token(
        &db,
        &user,
        false,
        &duokey_pki::RevocationList::empty(),
        3_600_000,
    )
    .await
    .unwrap();
    db.close().await;
    let how = Enrolment::Password {
        token: issued.token.as_str(),
        password: PASSWORD.as_bytes(),
    };
    let mut t = Terminal::init_with(&net.home(name), &user, how, &net.client, None)
        .await
        .unwrap();
    t.set_clock(net.clock.clone());
    t
}

fn accounts(net: &LocalNet) -> AccountsClient<tonic::transport::Channel> {
    AccountsClient::new(net.anonymous_from(&net.client.as_url.as_slice()[0], None))
}

/// One login's second step, ready to send (a fresh CSR for a fresh key).
async fn login_finish(net: &LocalNet, user: &str, password: &str) -> PasswordLoginFinishRequest {
    let mut accounts = accounts(net);
    let (state, request) = LoggingIn::start(password.as_bytes()).unwrap();
    let started = accounts
        .password_login_start(PasswordLoginStartRequest {
            user_id: user.into(),
            credential_request: request,
        })
        .await
        .unwrap()
        .into_inner();
    let key = duokey_crypto::IdentityKey::generate();
    let csr = duokey_pki::make_csr(&key, &UserId::new(user).unwrap()).unwrap();
    // A wrong password fails here, on the terminal's side: the test sends
    // a finalization anyway, as an attacker guessing online would.
    let (finalization, session_key) = state
        .finish(password.as_bytes(), &started.credential_response)
        .unwrap_or_else(|_| (vec![0; 64], zeroize::Zeroizing::new(vec![0; 64])));
    PasswordLoginFinishRequest {
        login_id: started.login_id,
        credential_finalization: finalization,
        csr_mac: password::csr_mac(&session_key, &csr).unwrap().to_vec(),
        csr_der: csr,
    }
}

#[tokio::test]
async fn a_password_account_chats_with_a_certificate_account() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut pat = password_account(&net, "pat").await;
    let gid = duokey_testkit::group_of_two(&mut alice, &mut pat, "mixed").await;
    alice.send(&gid, "hello pat").await.unwrap();
    pat.sync_messages(&gid).await.unwrap();
    pat.send(&gid, "hello alice").await.unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&alice, &gid).await, ["hello pat", "hello alice"]);
    // Logging in again gives a new certificate for the same key (contacts
    // see no change); a wrong password gives nothing.
    let (before, _, _) = pat.certificate().await.unwrap();
    let err = pat
        .renew_with_password(b"not the password")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong password"), "{err}");
    let (after, _, until) = pat.renew_with_password(PASSWORD.as_bytes()).await.unwrap();
    assert_ne!(before, after);
    let days = (until - i64::try_from(duokey_terminal::now_ms() / 1000).unwrap()) / 86_400;
    assert!((29..=30).contains(&days), "{days} days");
    pat.send(&gid, "after logging in again").await.unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert_eq!(
        texts(&alice, &gid).await.last().unwrap(),
        "after logging in again"
    );
    // The AS keeps the OPAQUE record only.
    let db = net.as_db().await;
    assert_eq!(db.password_record("pat").await.unwrap().unwrap().len(), 192);
    db.close().await;
    net.node.shutdown().await;
}

#[tokio::test]
async fn wrong_passwords_are_refused_counted_and_then_limited() {
    let net = LocalNet::start().await;
    password_account(&net, "pat").await;
    for _ in 0..duokey_accounts::LoginLimits::default().per_account {
        let req = login_finish(&net, "pat", "not the password").await;
        let err = accounts(&net).password_login_finish(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // Even the right password waits now.
    let err = login_start(&net, "pat").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("for pat"), "{err:?}");
    // The window passes on the AS's clock (DESIGN D41): the right password
    // works again.
    net.advance(std::time::Duration::from_secs(15 * 60 + 1));
    let req = login_finish(&net, "pat", PASSWORD).await;
    accounts(&net).password_login_finish(req).await.unwrap();
    net.node.shutdown().await;
}

/// OPAQUE lets a client test a guess against the first answer alone,
/// without a second step: each first step counts as a wrong password until
/// its login succeeds, so guessing that way is limited as well (guard: the
/// attempt recorded in `password_login_start`).
#[tokio::test]
async fn guesses_tested_by_the_client_alone_are_counted() {
    let net = LocalNet::start().await;
    let mut pat = password_account(&net, "pat").await;
    // The terminal finds a wrong password itself and sends no second step.
    let err = pat
        .renew_with_password(b"not the password")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong password"), "{err}");
    for _ in 1..duokey_accounts::LoginLimits::default().per_account {
        login_start(&net, "pat").await.unwrap();
    }
    let err = login_start(&net, "pat").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = pat
        .renew_with_password(PASSWORD.as_bytes())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("too many wrong passwords"),
        "{err}"
    );
    // Definitive for its window, not a fault to retry shortly.
    assert_eq!(err.kind(), duokey_terminal::ErrorKind::Refused, "{err}");
    net.node.shutdown().await;
}

/// First steps racing each other on one connection are each recorded
/// before they are counted, so no more than the limit get an answer to test
/// a guess against (guard: the attempt recorded before
/// `check_login_limits` in `password_login_start`).
#[tokio::test]
async fn racing_first_steps_get_no_more_answers_than_the_limit() {
    let net = LocalNet::start().await;
    password_account(&net, "pat").await;
    let client = accounts(&net);
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let mut client = client.clone();
        racing.spawn(async move {
            let (_, request) = LoggingIn::start(PASSWORD.as_bytes()).unwrap();
            client
                .password_login_start(PasswordLoginStartRequest {
                    user_id: "pat".into(),
                    credential_request: request,
                })
                .await
        });
    }
    let answers = racing.join_all().await;
    let answered = answers.iter().filter(|a| a.is_ok()).count();
    let limit = usize::try_from(duokey_accounts::LoginLimits::default().per_account).unwrap();
    assert!((1..=limit).contains(&answered), "{answered} answered of 12");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
    net.node.shutdown().await;
}

/// The first step of a login for `user`: refused when a limit is full.
async fn login_start(net: &LocalNet, user: &str) -> Result<(), tonic::Status> {
    let (_, request) = LoggingIn::start(PASSWORD.as_bytes()).unwrap();
    accounts(net)
        .password_login_start(PasswordLoginStartRequest {
            user_id: user.into(),
            credential_request: request,
        })
        .await
        .map(drop)
}

/// Wrong passwords of the same address, spread over accounts so that no
/// account reaches its own limit, stop logins from that address; a right
/// password in between does not reset the address's count.
#[tokio::test]
async fn wrong_passwords_from_one_address_are_limited_across_accounts() {
    let net = LocalNet::start_with(|c| c.limits.wrong_passwords_per_address = 3).await;
    password_account(&net, "pat").await;
    password_account(&net, "quinn").await;
    for (user, password) in [
        ("pat", "not the password"),
        ("pat", "still not it"),
        ("pat", PASSWORD),
        ("quinn", "a guess"),
    ] {
        let req = login_finish(&net, user, password).await;
        let answer = accounts(&net).password_login_finish(req).await;
        assert_eq!(answer.is_ok(), password == PASSWORD, "{user}: {answer:?}");
    }
    // Three wrong passwords from 127.0.0.1: no account is at its limit of
    // 5, yet logins from this address wait, for every account.
    for user in ["pat", "quinn", "nobody"] {
        let err = login_start(&net, user).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{user}: {err:?}");
        assert!(err.message().contains("network address"), "{err:?}");
    }
    let db = net.as_db().await;
    let since = i64::try_from(duokey_terminal::now_ms()).unwrap() - 60_000;
    assert_eq!(db.login_failures("pat", since).await.unwrap(), 0);
    assert_eq!(db.login_failures("quinn", since).await.unwrap(), 1);
    db.close().await;
    net.node.shutdown().await;
}

#[tokio::test]
async fn a_replayed_login_and_an_unbound_request_are_refused() {
    let net = LocalNet::start().await;
    password_account(&net, "pat").await;
    let req = login_finish(&net, "pat", PASSWORD).await;
    let replay = req.clone();
    accounts(&net).password_login_finish(req).await.unwrap();
    let err = accounts(&net)
        .password_login_finish(replay)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A certificate request swapped in by someone in the middle: its MAC
    // is not the login's.
    let mut req = login_finish(&net, "pat", PASSWORD).await;
    let other = duokey_crypto::IdentityKey::generate();
    req.csr_der = duokey_pki::make_csr(&other, &UserId::new("pat").unwrap()).unwrap();
    let err = accounts(&net).password_login_finish(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    net.node.shutdown().await;
}

#[tokio::test]
async fn no_server_file_holds_the_password() {
    let net = LocalNet::start().await;
    password_account(&net, "pat").await;
    let req = login_finish(&net, "pat", PASSWORD).await;
    accounts(&net).password_login_finish(req).await.unwrap();
    let mut dirs = vec![net.server_dir()];
    let mut scanned = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            scanned += 1;
            assert!(
                !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
                "{} holds the password",
                path.display()
            );
        }
    }
    assert!(scanned > 3, "only {scanned} files scanned");
    // The OPAQUE keys are a file of their own, apart from the database.
    assert!(net.server_dir().join("opaque.key").is_file());
    net.node.shutdown().await;
}
