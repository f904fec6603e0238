//! # duokey-terminal — the end terminal (SPEC §4, §6, §8)
//!
//! All client logic, usable without the command line: the profile store
//! (identity, certificates, groups, R1 and RN2 per epoch, history, cursors;
//! secrets sealed under an Argon2id-derived key), the sync engine (inbox,
//! grants, RN1 delivery and rotation, RN2 versions, stale notices) and every
//! flow of SPEC §4. RN1 never leaves the members' terminals except
//! HPKE-sealed to another member.
//!
//! ## Where things are
//!
//! ```text
//! Terminal (terminal.rs)   the façade: open/init a profile, connect, sync
//!  ├─ certificate.rs       this terminal's certificate: chain, renewal (SPEC §2)
//!  ├─ group.rs             groups: create, policy, members, rights, remove, leave, delete (§4.1–4.6)
//!  ├─ invite.rs            both sides of an invitation (§4.2): invite, ack, hand-over, anchor
//!  ├─ code.rs              invite codes: SPAKE2 on both sides, tries, confirmation (PROTOCOL §4.10)
//!  ├─ membership.rs        the member-signed history (§4.7): verify, sign, submit
//!  ├─ grant.rs             grants from the GMS: fetch, check, apply, refuse and hold (§4.3–4.6)
//!  ├─ rn1.rs               RN1: R1s held, rotation duty, receiving, rn1_wait fallback (§4.3, D37)
//!  ├─ inbox.rs             signed items out and in, batched, each processed once (§4)
//!  ├─ outbox.rs            sending: posted now or queued sealed until it can be (§3.3, §4.5)
//!  ├─ receive.rs           receiving: every receiver check in the spec's order (§3.3, §4.5)
//!  ├─ history.rs           messages and notices as shown, `read --follow` (§8)
//!  ├─ erasure.rs           erasing superseded keys and old history (§7, D36)
//!  ├─ delivery.rs          this terminal's delivery key: publish, rotate, erase (D38)
//!  ├─ contacts.rs          pins, safety numbers, revocation of contacts (PROTOCOL §7)
//!  ├─ live.rs              Subscribe/Watch streams and the timer (PROTOCOL §5.1)
//!  └─ store/               the profile database — the only module that speaks SQL
//!       mod.rs             meta, groups, grants, R1s, anchors, items seen/pending
//!       contacts.rs        pinned keys and their confirmation
//!       invites.rs         both sides of SPEC §4.2, states stored by name
//!       codes.rs           invite codes held on both sides (sealed)
//!       history.rs         decrypted messages and the log cursor
//!       outbox.rs          messages written, not yet acknowledged
//! vault.rs                 sealing under the passphrase key (Argon2id)
//! agent.rs                 the unlocked session: the key held by `duokey unlock`'s agent
//! keylog.rs                the opt-in DUOKEY_KEYLOG debug file (SPEC §8)
//! config.rs                client.toml
//! password.rs              password accounts: OPAQUE enrolment and login (DESIGN D51)
//! error.rs                 the crate's error, and its kind for exit codes
//! ```
#![forbid(unsafe_code)]

pub mod agent;
mod certificate;
mod code;
pub use certificate::ProfileInfo;
pub use code::{CodeInvitation, DEFAULT_CODE_TTL_MS};
pub mod config;
pub mod contacts;
mod delivery;
mod erasure;
mod error;
mod grant;
mod group;
mod history;
mod inbox;
mod invite;
pub mod keylog;
pub mod live;
mod membership;
mod outbox;
mod password;
mod receive;
mod rn1;
pub mod store;
mod terminal;
pub mod vault;

pub use config::ClientConfig;
pub use error::{Error, ErrorKind, Result};
pub use grant::{Epoch, KeyChange};
pub use group::{GroupInfo, GroupPolicy, MemberInfo, PolicyChange, PolicyView};
pub use history::{Line, Message, Notice, UNREADABLE};
pub use invite::{Invitation, SentInvitation};
pub use live::{Backoff, Live, LiveEvent, LiveUpdate};
pub use membership::MembershipCode;
pub use outbox::{SendOutcome, Waiting};
pub use password::Enrolment;
pub use receive::OpenCache;
pub use store::GroupState;
pub use terminal::Terminal;

/// Crash injection for tests: in debug builds, when the
/// environment variable `DUOKEY_FAILPOINT` names this point, the process
/// aborts here, as a power cut or `kill -9` would. Release builds hold no
/// failpoint.
pub(crate) fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("DUOKEY_FAILPOINT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Unix time in milliseconds (the clock every role reads).
pub use duokey_pki::clock::now_ms;
