//! The roles of SPEC §1 and how certificates carry them.
//!
//! # Encoding
//!
//! Every certificate issued by a Duokey CA carries its roles in the subject's
//! OrganizationalUnit (OU, OID 2.5.4.11) attribute as `duokey-<role>` tokens:
//! `duokey-terminal`, `duokey-gms`, `duokey-cs`, `duokey-as`.
//!
//! A server certificate may carry several roles (dev mode runs AS, GMS and CS
//! in one process). The subject then has **one** OU attribute whose value is
//! the role tokens separated by single spaces, in the canonical order
//! `as gms cs`, e.g. `OU=duokey-as duokey-gms duokey-cs`. (rcgen can write only
//! one attribute per type, and a single attribute keeps the subject simple for
//! tools such as `openssl x509 -subject`.)
//!
//! When reading, [`roles_from_ou_values`] accepts any number of OU attributes and
//! splits each on spaces and commas, so certificates with one OU per role (made by
//! other tools) read the same. Tokens not starting with `duokey-` (an enterprise
//! CA's department names) are ignored; an unknown `duokey-*` token is an error.
//! A certificate with no `duokey-*` token at all is a terminal certificate from an
//! external enterprise CA (SPEC §2) and gets the role [`Role::Terminal`].
//!
//! The terminal role never combines with a server role.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Prefix of the OU tokens of Duokey roles (SPEC §1).
pub const ROLE_OU_PREFIX: &str = "duokey-";

/// A role of SPEC §1, as carried by a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// An end terminal (ET, the `duokey` program) of one user (SPEC §1).
    Terminal,
    /// The Account Server: enrols terminals with the CA (SPEC §1, §5.1).
    As,
    /// The Group Management Server (SPEC §1, §5.2).
    Gms,
    /// The Communication Server (SPEC §1, §5.3).
    Cs,
}

impl Role {
    /// All roles, in canonical order (SPEC §1).
    pub const ALL: [Role; 4] = [Role::Terminal, Role::As, Role::Gms, Role::Cs];

    /// The OU token of the role in certificates: `duokey-terminal`, `duokey-as`,
    /// `duokey-gms`, `duokey-cs` (SPEC §1, §2).
    pub fn ou(self) -> &'static str {
        match self {
            Role::Terminal => "duokey-terminal",
            Role::As => "duokey-as",
            Role::Gms => "duokey-gms",
            Role::Cs => "duokey-cs",
        }
    }

    /// The short name used in configuration files and the command line
    /// (`terminal`, `as`, `gms`, `cs`; SPEC §1, §8).
    pub fn name(self) -> &'static str {
        match self {
            Role::Terminal => "terminal",
            Role::As => "as",
            Role::Gms => "gms",
            Role::Cs => "cs",
        }
    }

    /// The role of an OU token such as `duokey-gms`, if it is one (SPEC §1).
    pub fn from_ou(token: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.ou() == token)
    }

    /// Whether this is a server role (AS, GMS or CS; SPEC §1).
    pub fn is_server(self) -> bool {
        !matches!(self, Role::Terminal)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = Error;

    /// Parses a short name (`gms`) or an OU token (`duokey-gms`).
    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s || r.ou() == s)
            .ok_or_else(|| Error::UnknownRole(s.to_owned()))
    }
}

/// Sorts and deduplicates server roles and checks the set is valid for a server
/// certificate: not empty, no terminal role (SPEC §1, §2).
pub(crate) fn canonical_server_roles(roles: &[Role]) -> Result<Vec<Role>> {
    let mut out: Vec<Role> = roles.to_vec();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Error::InvalidRoles(
            "a server certificate needs at least one role",
        ));
    }
    if out.contains(&Role::Terminal) {
        return Err(Error::InvalidRoles(
            "a server certificate cannot carry the terminal role",
        ));
    }
    Ok(out)
}

/// The single OU value encoding `roles` (space-separated tokens, see the module
/// documentation; SPEC §1, §2).
pub(crate) fn roles_ou_value(roles: &[Role]) -> String {
    roles.iter().map(|r| r.ou()).collect::<Vec<_>>().join(" ")
}

/// Decodes the roles of a certificate from the values of its subject OU
/// attributes (SPEC §1, §2; encoding in the module documentation).
///
/// Returns the roles sorted and deduplicated. No `duokey-*` token at all means
/// [`Role::Terminal`] (an external enterprise CA's terminal certificate).
pub fn roles_from_ou_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Role>> {
    let mut roles = Vec::new();
    for value in values {
        for token in value
            .split(|c: char| c.is_ascii_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
        {
            if !token.starts_with(ROLE_OU_PREFIX) {
                continue;
            }
            let role = Role::from_ou(token).ok_or_else(|| Error::UnknownRole(token.to_owned()))?;
            roles.push(role);
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        roles.push(Role::Terminal);
    }
    if roles.contains(&Role::Terminal) && roles.len() > 1 {
        return Err(Error::InvalidRoles(
            "a certificate cannot be both a terminal and a server",
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_ou(r.ou()), Some(r));
            assert_eq!(r.name().parse::<Role>().ok(), Some(r));
            assert_eq!(r.ou().parse::<Role>().ok(), Some(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn ou_encoding() -> Result<()> {
        let roles = canonical_server_roles(&[Role::Cs, Role::As, Role::Gms, Role::Cs])?;
        assert_eq!(roles, vec![Role::As, Role::Gms, Role::Cs]);
        let ou = roles_ou_value(&roles);
        assert_eq!(ou, "duokey-as duokey-gms duokey-cs");
        assert_eq!(roles_from_ou_values([ou.as_str()])?, roles);
        // One OU per role, commas, foreign department names: same result.
        assert_eq!(
            roles_from_ou_values(["duokey-cs", "Sales", "duokey-gms,duokey-as"])?,
            roles
        );
        Ok(())
    }

    #[test]
    fn no_duokey_ou_means_terminal() -> Result<()> {
        assert_eq!(roles_from_ou_values([])?, vec![Role::Terminal]);
        assert_eq!(roles_from_ou_values(["Engineering"])?, vec![Role::Terminal]);
        Ok(())
    }

    #[test]
    fn bad_role_sets() {
        assert!(matches!(
            roles_from_ou_values(["duokey-root"]),
            Err(Error::UnknownRole(_))
        ));
        assert!(matches!(
            roles_from_ou_values(["duokey-terminal duokey-cs"]),
            Err(Error::InvalidRoles(_))
        ));
        assert!(canonical_server_roles(&[]).is_err());
        assert!(canonical_server_roles(&[Role::Gms, Role::Terminal]).is_err());
    }
}
