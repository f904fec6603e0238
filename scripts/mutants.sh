#!/usr/bin/env bash
# Mutation check of the security guards (SECURITY.md, "Mutation check"): for each guard listed
# below, removes it from the source (one literal replacement), runs the test
# that docs/SECURITY.md says guards it, and expects that test to FAIL. Each
# file is restored after its mutant, whatever happens (also on Ctrl-C).
#
#   scripts/mutants.sh            # every mutant (about a minute each on 2 cores)
#   scripts/mutants.sh anchor     # only the mutants whose name contains "anchor"
#
# Prints one line per mutant: "caught", "MISSED" (the test passed without
# its guard), "HUNG" (it did not end: a test must fail, not hang) or "GONE"
# (the guarded text is no longer in the file exactly once: update the
# table). Exits 1 unless every mutant was caught.
# Needs python3 (for the literal replacement) and the services .ci/run uses.
set -uo pipefail
cd "$(dirname "$0")/.."
export DUOKEY_TEST_POSTGRES_URL="${DUOKEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export DUOKEY_TEST_NATS_URL="${DUOKEY_TEST_NATS_URL:-nats://127.0.0.1:4222}"
only="${1:-}"
failed=0
backup=""
restore() { [ -n "$backup" ] && cp "$backup" "$target" && rm -f "$backup"; backup=""; }
trap 'restore; exit 130' INT TERM

# mutant NAME FILE GUARD REPLACEMENT TEST-ARGS...
mutant() {
    local name="$1" file="$2" guard="$3" replacement="$4"
    shift 4
    [[ -n "$only" && "$name" != *"$only"* ]] && return
    target="$file"
    backup="$(mktemp)"
    cp "$file" "$backup"
    if ! python3 - "$file" "$guard" "$replacement" <<'PY'
import sys
path, guard, replacement = sys.argv[1:4]
text = open(path).read()
if text.count(guard) != 1:
    sys.exit(1)
open(path, "w").write(text.replace(guard, replacement))
PY
    then
        printf '%-22s GONE   (%s: the guarded text is not there exactly once)\n' "$name" "$file"
        failed=1
        restore
        return
    fi
    # Bounded: a test that hangs without its guard is reported, not waited on.
    # The binaries first: CLI tests run duokey-server from other packages.
    timeout 900 bash -c 'cargo build --locked -q --workspace --bins && cargo test --locked -q "$@"' \
        mutant "$@" >/dev/null 2>&1
    case $? in
        0) printf '%-22s MISSED (cargo test %s passed without the guard)\n' "$name" "$*"; failed=1 ;;
        124) printf '%-22s HUNG   (cargo test %s did not end within 15 min)\n' "$name" "$*"; failed=1 ;;
        *) printf '%-22s caught (%s)\n' "$name" "${*: -1}" ;;
    esac
    restore
}

T=crates/terminal/src
mutant erased-mark $T/rn1.rs \
    'if self.store.r1_erased(&gid, p.rn1_version).await? {' 'if false {' \
    -p duokey-cli --test lying_gms an_rn1_replayed_after_its_r1_was_erased_is_refused
mutant anchor-compare $T/invite.rs \
    '        if &mine == head' '        if true' \
    -p duokey-cli --test lying_gms two_members_shown_different_histories
mutant anchor-recheck $T/invite.rs \
    'self.store.anchors_in(gid).await? {' 'self.store.anchors_in(gid).await?.into_iter().filter(|_| false) {' \
    -p duokey-cli --test lying_gms two_members_shown_different_histories
mutant fork-stops-sending $T/outbox.rs \
    '            return Err(forked(name));' '' \
    -p duokey-cli --test lying_gms two_members_shown_different_histories
mutant recorded-key $T/rn1.rs \
    '            && self.contact_key(to).await? != recorded' '            && false' \
    -p duokey-cli --test properties a_forged_identity_gets_no_rn1
mutant member-list $T/membership.rs \
    '            if theirs != verified {' '            if false {' \
    -p duokey-cli --test lying_gms a_member_the_gms_injects
mutant members-after crates/proto/src/lib.rs \
    '            members.retain(|m| user(m) != subject);' '' \
    -p duokey-cli --test properties live_grants_without_member_lists
mutant cs-clock crates/cs/src/writer.rs \
    '    let now = state.now_ms();' '    let now = duokey_pki::clock::now_ms_i64();' \
    -p duokey-cli --test stale stale_sender_is_told_and_recovers
mutant rn1-recipients $T/rn1.rs \
    "        .filter(|(u, _)| u != me.as_str() && !sent.contains(u))" "        .filter(|(u, _)| u != me.as_str())" \
    -p duokey-terminal --lib rn1_is_owed
mutant item-replay $T/inbox.rs \
    '        if self.store.seen(&id).await? {' '        if false {' \
    -p duokey-cli --test properties replayed_envelope_and_inbox_item_are_refused
mutant wal-checkpoint $T/erasure.rs \
    '                self.store.checkpoint().await?;' '' \
    -p duokey-cli --test properties stolen_terminal_state_does_not_open
mutant grant-rn1-version $T/membership.rs \
    '        if g.rn1_version != at.rn1_version {' '        if false {' \
    -p duokey-cli --test lying_gms a_rotator_the_gms_names_sends_no_r1
mutant grant-rollback $T/membership.rs \
    'if g.rn2_version > current && g.membership_seq < granted {' 'if false {' \
    -p duokey-cli --test lying_gms a_new_version_that_rolls_membership_back
mutant verified-rotator $T/rn1.rs \
    '        if state.rotator(p.rn1_version) != Some(&item.sender) {' '        if false {' \
    -p duokey-cli --test lying_gms an_rn1_from_a_member_who_is_not_the_rotator
mutant rotation-version $T/rn1.rs \
    '        if first != Some(p.at_rn2_version) {' '        if false {' \
    -p duokey-cli --test lying_gms the_verified_rotator_cannot_name_another_version
mutant retention-erasure $T/erasure.rs \
    '            if erased > 0 {' '            if false {' \
    -p duokey-cli --test properties stolen_terminal_state_does_not_open
mutant change-signature crates/crypto/src/membership/state.rs \
    '        change.verify(&actor.key)?;' '' \
    -p duokey-cli --test lying_gms a_change_signed_with_a_key_the_history_never_recorded
mutant cs-member-fetch crates/cs/src/lib.rs \
    '        let upto = self.state.readable_upto(&gid, user.as_str())?;' '        let upto: Option<u64> = { let _ = &user; None };' \
    -p duokey-server --test gms_rules non_members_are_refused_and_a_removed_member_reads_only
mutant cs-departed-upto crates/cs/src/state.rs \
    '            Some((_, _, Some(upto))) => Ok(Some(upto)),' '            Some((_, _, Some(_))) => Ok(None),' \
    -p duokey-server --test gms_rules non_members_are_refused_and_a_removed_member_reads_only
mutant cs-member-fetch-demo crates/cs/src/state.rs \
    '            Some((_, _, Some(upto))) => Ok(Some(upto)),' '            Some((_, _, Some(_))) => Ok(None),' \
    -p duokey-cli --test flows demo
mutant cs-client-cert crates/server/src/node.rs \
    'self.incoming(listener, ClientAuth::Required)?' 'self.incoming(listener, ClientAuth::Optional)?' \
    -p duokey-server --test mtls the_cs_port_refuses_a_client_without_certificate
mutant cs-page-bytes crates/proto/src/lib.rs \
    'pub const PAGE_BYTES: usize = 3 * 1024 * 1024;' 'pub const PAGE_BYTES: usize = usize::MAX / 4;' \
    -p duokey-server --test cs_behaviour a_run_of_large_posts_is_fetched_in_pages
mutant send-items-bytes $T/inbox.rs \
    'const SEND_ITEMS_BYTES: usize = 192 * 1024;' 'const SEND_ITEMS_BYTES: usize = usize::MAX / 4;' \
    -p duokey-terminal --lib items_are_sent_in_batches
mutant replay-before-decrypt $T/receive.rs \
    '            self.remember(&h, log_seq);' '            let _ = (&h, log_seq);' \
    -p duokey-cli --test properties a_reused_sequence_number
mutant page-replay $T/receive.rs \
    '            (Some(_), _) => Seen::ReplayedId,' '            (Some(_), _) => Seen::Fresh,' \
    -p duokey-terminal --lib a_replay_inside_one_page
mutant epoch-grace $T/receive.rs \
    '        } else if stored_at_ms > next.issued_at_ms + next.grace_secs.saturating_mul(1000) {' '        } else if false {' \
    -p duokey-terminal --lib the_epoch_rule_follows
mutant same-envelope-twice $T/receive.rs \
    '(Some(at), _) if *at == log_seq => Seen::ThisEnvelope,' '(Some(at), _) if *at == log_seq => Seen::ReplayedId,' \
    -p duokey-cli --test properties two_processes_on_one_profile
mutant one-server-per-dir crates/server/src/dev.rs \
    '    if let Err(e) = lock_soon(&file) {' '    if let Err(e) = Ok::<(), std::fs::TryLockError>(()) {' \
    -p duokey-server --test observability a_second_server_on_the_same_directory
mutant queue-when-unreachable $T/outbox.rs \
    '            Err(e) if e.kind() == crate::ErrorKind::Network => {
                self.queue_attempted(gid, text, Some(&envelope)).await?;' '            Err(e) if false => {
                self.queue_attempted(gid, text, Some(&envelope)).await?;' \
    -p duokey-cli --test flows a_message_sent_while_the_server_is_down
mutant grant-outage-kept $T/grant.rs \
    '        tonic::Code::NotFound | tonic::Code::PermissionDenied | tonic::Code::OutOfRange' '        _' \
    -p duokey-cli --test lying_gms messages_whose_key_the_gms_cannot_serve_yet
mutant follow-reconnects $T/history.rs \
    '                Err(e) if e.kind() == crate::ErrorKind::Network => e,' '                Err(e) if false => e,' \
    -p duokey-cli --test flows read_follow_streams_messages_and_notices
mutant offline-answers crates/cli/src/main.rs \
    '        Err(e) if e.kind() == ErrorKind::Network && works_offline(&cli.command) => {' '        Err(e) if false => {' \
    -p duokey-cli --test flows offline_the_profile_answers
mutant gms-delete-grants crates/storage/src/gms.rs \
    '        sqlx::query("DELETE FROM gms_grants WHERE group_id = $1")' '        sqlx::query("SELECT $1")' \
    -p duokey-cli --test properties a_deleted_groups_rn2s_are_in_no_server_file
mutant gms-checkpoint crates/gms/src/service.rs \
    '        self.inner.db.checkpoint().await?;' '' \
    -p duokey-cli --test properties a_deleted_groups_rn2s_are_in_no_server_file
mutant server-secure-delete crates/storage/src/lib.rs \
    'PRAGMA secure_delete = ON;' 'PRAGMA secure_delete = OFF;' \
    -p duokey-cli --test properties a_deleted_groups_rn2s_are_in_no_server_file
mutant last-fetch $T/grant.rs \
    '            self.last_fetch(&gid).await?;' '' \
    -p duokey-cli --test flows history_is_kept_after_removal_leave_and_deletion
mutant revoked-connection crates/pki/src/grpc.rs \
    '                        let kill = serial.map(|s| watch_revocation(s, revoked, peer));' '                        let kill: Option<oneshot::Receiver<()>> = serial.and(None);' \
    -p duokey-server --test mtls a_revoked_terminal_loses_its_open_streams
mutant revocation-file-missing crates/pki/src/revocation.rs \
    '            return Err(Error::MissingRevocationList(path.to_path_buf()));' '            return Ok(HashSet::new());' \
    -p duokey-pki --lib a_missing_file_is_an_error
mutant revoked-sender $T/inbox.rs \
    '        self.check_not_revoked(&sender).await?;' '' \
    -p duokey-cli --test properties a_revoked_member_gets_no_new_rn1
mutant revoked-recipient $T/rn1.rs \
    '        self.check_not_revoked(to).await?;' '' \
    -p duokey-cli --test properties a_revoked_member_gets_no_new_rn1
mutant revocations-synced $T/terminal.rs \
    '        self.sync_revocations().await?;' '' \
    -p duokey-cli --test properties a_revoked_member_gets_no_new_rn1
mutant token-replace crates/accounts/src/lib.rs \
    '    if let (false, Some(serial)) = (replace, valid.first()) {' '    if let (false, Some(serial)) = (true, valid.first()) {' \
    -p duokey-server --test mtls a_second_plain_token_cannot_replace
mutant enrol-replace crates/accounts/src/lib.rs \
    '        if !valid.is_empty() && !replace {' '        if false {' \
    -p duokey-server --test mtls a_second_plain_token_cannot_replace
mutant replaced-revoked crates/accounts/src/lib.rs \
    '            self.revoke_replaced(&user, &valid);' '' \
    -p duokey-server --test mtls a_second_plain_token_cannot_replace
mutant changed-not-verified $T/contacts.rs \
    '        let verified = verified && (confirm || !changed);' '        let verified = verified;' \
    -p duokey-cli --test flows re_enrolment_is_explicit
mutant new-key-item-kept $T/inbox.rs \
    '        self.store.put_pending(&id, bytes, self.now_ms()).await
    }' '        let _ = (id, bytes);
        Ok(())
    }' \
    -p duokey-cli --test flows re_enrolment_is_explicit
mutant renew-same-key crates/accounts/src/lib.rs \
    '        if !same_key {' '        if false {' \
    -p duokey-server --test mtls a_terminal_renews_its_certificate
mutant renew-when-due $T/terminal.rs \
    '        self.renew_if_due().await?;' '' \
    -p duokey-cli --test properties a_certificate_two_thirds_through
mutant inbox-enrolled crates/cs/src/lib.rs \
    '        if let Some(u) = users.iter().find(|u| !known.iter().any(|k| k == *u)) {' '        if let Some(u) = users.iter().find(|_| false) {' \
    -p duokey-server --test cs_behaviour inboxes_are_bounded
mutant inbox-full crates/cs/src/lib.rs \
    '            if held + n > cfg.inbox_max_items || held_bytes + bytes > cfg.inbox_max_bytes {' '            if false {' \
    -p duokey-server --test cs_behaviour inboxes_are_bounded
mutant inbox-expiry crates/cs/src/lib.rs \
    '            .purge_inbox(now_ms.saturating_sub(keep_ms))' '            .purge_inbox(0)' \
    -p duokey-server --test cs_behaviour inboxes_are_bounded
mutant groups-per-user crates/gms/src/service.rs \
    '        if u64::try_from(n).unwrap_or(u64::MAX) >= max {' '        if false {' \
    -p duokey-server --test gms_rules groups_per_user_and_retention
mutant retention-max crates/gms/src/policy.rs \
    '    if p.retention_secs > limits.max_retention_secs {' '    if false {' \
    -p duokey-server --test gms_rules groups_per_user_and_retention
mutant history-erased $T/erasure.rs \
    '        self.erase_old_history(now).await?;' '' \
    -p duokey-cli --test properties decrypted_history_is_erased
mutant history-kept $T/erasure.rs \
    '        if self.store.meta("keep_history").await?.is_some() {' '        if false {' \
    -p duokey-cli --test properties decrypted_history_is_erased
mutant streams-per-user crates/cs/src/hub.rs \
    '        if list.len() >= self.bounds.per_user {' '        if false {' \
    -p duokey-server --test cs_behaviour live_streams_per_user_are_bounded
mutant rn1-fallback $T/terminal.rs \
    '        self.replace_missing_rn1().await?;
        self.finish_invitations()' '        self.finish_invitations()' \
    -p duokey-cli --test properties missing_rotator_is_replaced
mutant rn1-fallback-rank crates/crypto/src/membership/state.rs \
    '            .min(RN1_FALLBACK_STEPS - 1)' '            .min(0)' \
    -p duokey-crypto --lib one_member_acts_first
mutant rn1-fallback-newcomer crates/crypto/src/membership/state.rs \
    ' && before.members.contains_key(*u))' ')' \
    -p duokey-crypto --lib never_the_rotator_nor_a_newcomer
mutant invite-resume $T/invite.rs \
    '        if !added {' '        if true {' \
    -p duokey-cli --test flows hand_over_killed_midway
mutant invite-finish $T/terminal.rs \
    '        self.finish_invitations().await?;' '' \
    -p duokey-cli --test flows hand_over_killed_midway
mutant stream-bytes crates/cs/src/hub.rs \
    '.saturating_add(size) <= self.bounds.bytes;' '.saturating_add(size) <= usize::MAX;' \
    -p duokey-server --test cs_behaviour never_reads_is_cut_at_its_byte_bound
mutant watch-per-user crates/gms/src/watch.rs \
    '            if open >= self.per_user {' '            if false {' \
    -p duokey-server --test cs_behaviour live_streams_per_user_are_bounded
mutant server-cert-reload crates/server/src/node.rs \
    '        self.identity.replace(chain, private)?;' '        let _ = (chain, private);' \
    -p duokey-server --test mtls renewed_server_certificate
mutant delivery-rotate $T/delivery.rs \
    '        if now.saturating_sub(created) >= DELIVERY_KEY_ROTATE_MS {' '        if false {' \
    -p duokey-cli --test properties delivery_keys_rotate
mutant delivery-erase $T/delivery.rs \
    '.erase_retired_delivery(keep_from)' '.erase_retired_delivery(0)' \
    -p duokey-cli --test properties delivery_keys_rotate
mutant delivery-kept $T/delivery.rs \
    '.chain(&self.retired)' '.chain(self.retired.iter().take(0))' \
    -p duokey-cli --test properties delivery_keys_rotate
mutant delivery-max-age $T/contacts.rs \
    '    (age > DELIVERY_KEY_MAX_AGE_MS).then_some' '    false.then_some' \
    -p duokey-terminal --lib delivery_keys_older_than
mutant live-timer $T/live.rs \
    '                self.replace_missing_rn1().await?;' '' \
    -p duokey-cli --test properties live_terminal_replaces
exit "$failed"
