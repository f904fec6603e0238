//! Group policy (SPEC §4.3, §4.4, §4.5) with its defaults.

use duokey_proto::Policy;
use tonic::Status;

/// Default period of the scheduled RN2 rotation: 1 h.
pub const DEFAULT_ROTATE_EVERY_SECS: u64 = 3600;
/// Default grace window: 5 min.
pub const DEFAULT_GRACE_SECS: u64 = 300;
/// Default retention: 30 days.
pub const DEFAULT_RETENTION_SECS: u64 = 30 * 24 * 3600;
/// Default largest group.
pub const DEFAULT_MAX_MEMBERS: u32 = 10_000;
/// Default wait for a rotated RN1: 2 min.
pub const DEFAULT_RN1_WAIT_SECS: u64 = 120;

/// This server's limits on what a group's policy may ask for.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    /// Shortest `rotate_every` (SPEC §4.4: 60 s; tests may lower it).
    pub min_rotate_secs: u64,
    /// Longest retention (a quota the operator sets).
    pub max_retention_secs: u64,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            min_rotate_secs: 60,
            max_retention_secs: DEFAULT_MAX_RETENTION_SECS,
        }
    }
}

/// Default longest retention a group may choose: 365 days.
pub const DEFAULT_MAX_RETENTION_SECS: u64 = 365 * 24 * 3600;

/// Fills zero fields with defaults and checks the rest against `limits`.
pub fn normalise(p: Option<Policy>, limits: PolicyLimits) -> Result<Policy, Status> {
    let min_rotate_secs = limits.min_rotate_secs;
    let mut p = p.unwrap_or_default();
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    p.rotate_every_secs = or(p.rotate_every_secs, DEFAULT_ROTATE_EVERY_SECS);
    p.grace_secs = or(p.grace_secs, DEFAULT_GRACE_SECS);
    p.retention_secs = or(p.retention_secs, DEFAULT_RETENTION_SECS);
    p.rn1_wait_secs = or(p.rn1_wait_secs, DEFAULT_RN1_WAIT_SECS);
    if p.max_members == 0 {
        p.max_members = DEFAULT_MAX_MEMBERS;
    }
    if p.rotate_every_secs < min_rotate_secs {
        return Err(Status::invalid_argument(format!(
            "rotate_every must be at least {min_rotate_secs} s"
        )));
    }
    if p.max_members > DEFAULT_MAX_MEMBERS {
        return Err(Status::invalid_argument(format!(
            "max_members is at most {DEFAULT_MAX_MEMBERS}"
        )));
    }
    if p.retention_secs > limits.max_retention_secs {
        return Err(Status::invalid_argument(format!(
            "retention is longer than this server allows ({} days at most)",
            limits.max_retention_secs / 86_400
        )));
    }
    for (name, v) in [
        ("rotate_every", p.rotate_every_secs),
        ("grace", p.grace_secs),
        ("retention", p.retention_secs),
    ] {
        if v > 10 * 365 * 24 * 3600 {
            return Err(Status::invalid_argument(format!(
                "{name} is longer than ten years"
            )));
        }
    }
    Ok(p)
}

/// The policy the owner signed (SPEC §4.7) as the GMS stores and grants
/// carry it, after this server's own limits: `max_members` and durations
/// within what it accepts.
pub fn from_signed(
    p: &duokey_crypto::membership::Policy,
    limits: PolicyLimits,
) -> Result<Policy, Status> {
    normalise(Some(Policy::from(p)), limits)
        // Every signed field is explicit: a signed grace of 0 stays 0.
        .map(|mut out| {
            out.grace_secs = p.grace_secs;
            out
        })
}

/// Whether removals and leaves rotate RN1 (SPEC §4.3 step 4, default on).
pub fn rotates_rn1_on_remove(p: &Policy) -> bool {
    !p.no_rotate_rn1_on_remove
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_take_the_spec_defaults() {
        let p = normalise(None, PolicyLimits::default()).unwrap();
        assert_eq!(
            (p.rotate_every_secs, p.grace_secs, p.retention_secs),
            (3600, 300, 30 * 24 * 3600)
        );
        assert_eq!((p.max_members, p.rn1_wait_secs), (10_000, 120));
        assert!(rotates_rn1_on_remove(&p));
    }

    #[test]
    fn too_short_rotation_and_too_many_members_are_refused() {
        let short = Policy {
            rotate_every_secs: 30,
            ..Default::default()
        };
        assert!(normalise(Some(short), PolicyLimits::default()).is_err());
        let big = Policy {
            max_members: 20_000,
            ..Default::default()
        };
        assert!(normalise(Some(big), PolicyLimits::default()).is_err());
        let long = Policy {
            retention_secs: DEFAULT_MAX_RETENTION_SECS + 1,
            ..Policy::default()
        };
        let err = normalise(Some(long), PolicyLimits::default()).unwrap_err();
        assert!(err.message().contains("365 days"), "{err}");
    }
}
