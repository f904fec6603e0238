//! Slash commands of `duokey chat`, parsed without side effects.

/// A command typed in the input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/create NAME`
    Create(String),
    /// `/invite USER [--can-invite] [--can-remove] [--code]`
    Invite {
        /// The invitee.
        user: String,
        /// May invite others.
        can_invite: bool,
        /// May remove members and rotate keys.
        can_remove: bool,
        /// With a one-time code to tell them (PROTOCOL §4.10).
        code: bool,
    },
    /// `/remove USER`
    Remove(String),
    /// `/leave`
    Leave,
    /// `/transfer USER`: make a member the owner.
    Transfer(String),
    /// `/rotate [--rn1]`
    Rotate {
        /// Also a new RN1.
        rn1: bool,
    },
    /// `/verify USER [--confirm]`
    Verify {
        /// The contact.
        user: String,
        /// Record that the safety numbers matched.
        confirm: bool,
    },
    /// `/members`: show or hide the member panel.
    Members,
    /// `/accept [INVITE]`: the selected (or named) invitation.
    Accept(Option<String>),
    /// `/accept [INVITE] --code CODE`: a code invitation.
    AcceptCode(Option<String>, String),
    /// `/decline [INVITE]`
    Decline(Option<String>),
    /// `/help`
    Help,
    /// `/quit`
    Quit,
}

/// One line per command, for `/help`.
pub const HELP: &[(&str, &str)] = &[
    ("/create NAME", "create a group"),
    (
        "/invite USER [--can-invite] [--can-remove] [--code]",
        "invite someone (--code: with a code)",
    ),
    ("/remove USER", "remove a member (new key)"),
    ("/leave", "leave this group"),
    ("/transfer USER", "make a member the owner"),
    ("/rotate [--rn1]", "replace the group key now"),
    ("/verify USER [--confirm]", "safety number of a contact"),
    ("/members", "show or hide the member panel"),
    ("/accept, /decline [ID]", "answer an invitation"),
    (
        "/accept [ID] --code CODE",
        "accept with the code you were told",
    ),
    ("/help, /quit", "this help; leave the chat"),
];

/// Parses a line starting with `/`; `Err` says what is wrong.
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("/");
    let rest: Vec<&str> = words.collect();
    let (flags, args): (Vec<&str>, Vec<&str>) = rest.iter().partition(|w| w.starts_with("--"));
    let flag = |f: &str| flags.contains(&f);
    let allowed = |known: &[&str]| -> Result<(), String> {
        match flags.iter().find(|f| !known.contains(f)) {
            Some(f) => Err(format!("{name} does not take {f}")),
            None => Ok(()),
        }
    };
    let one = |what: &str| -> Result<String, String> {
        match args.as_slice() {
            [a] => Ok((*a).to_owned()),
            _ => Err(format!("usage: {name} {what}")),
        }
    };
    let optional = || -> Result<Option<String>, String> {
        match args.as_slice() {
            [] => Ok(None),
            [a] => Ok(Some((*a).to_owned())),
            _ => Err(format!("usage: {name} [INVITE]")),
        }
    };
    let none = |c: Command| -> Result<Command, String> {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(format!("{name} takes no argument"))
        }
    };
    match name {
        "/create" => {
            allowed(&[])?;
            let name = rest.join(" ");
            if name.is_empty() {
                return Err("usage: /create NAME".into());
            }
            Ok(Command::Create(name))
        }
        "/invite" => {
            allowed(&["--can-invite", "--can-remove", "--code"])?;
            Ok(Command::Invite {
                user: one("USER [--can-invite] [--can-remove] [--code]")?,
                can_invite: flag("--can-invite"),
                can_remove: flag("--can-remove"),
                code: flag("--code"),
            })
        }
        "/remove" => allowed(&[]).and_then(|()| one("USER").map(Command::Remove)),
        "/leave" => allowed(&[]).and_then(|()| none(Command::Leave)),
        "/transfer" => allowed(&[]).and_then(|()| one("USER").map(Command::Transfer)),
        "/rotate" => {
            allowed(&["--rn1"]).and_then(|()| none(Command::Rotate { rn1: flag("--rn1") }))
        }
        "/verify" => {
            allowed(&["--confirm"])?;
            Ok(Command::Verify {
                user: one("USER [--confirm]")?,
                confirm: flag("--confirm"),
            })
        }
        "/members" => allowed(&[]).and_then(|()| none(Command::Members)),
        "/accept" if flag("--code") => {
            allowed(&["--code"])?;
            match args.as_slice() {
                [code] => Ok(Command::AcceptCode(None, (*code).to_owned())),
                [invite, code] => Ok(Command::AcceptCode(
                    Some((*invite).to_owned()),
                    (*code).to_owned(),
                )),
                _ => Err("usage: /accept [INVITE] --code CODE".into()),
            }
        }
        "/accept" => allowed(&[]).and_then(|()| optional().map(Command::Accept)),
        "/decline" => allowed(&[]).and_then(|()| optional().map(Command::Decline)),
        "/help" | "/?" => Ok(Command::Help),
        "/quit" | "/exit" | "/q" => Ok(Command::Quit),
        other => Err(format!("unknown command {other}; /help lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses() {
        assert_eq!(
            parse("/create Project X"),
            Ok(Command::Create("Project X".into()))
        );
        assert_eq!(
            parse("/invite bob --can-remove"),
            Ok(Command::Invite {
                user: "bob".into(),
                can_invite: false,
                can_remove: true,
                code: false,
            })
        );
        assert_eq!(
            parse("/invite bob --code"),
            Ok(Command::Invite {
                user: "bob".into(),
                can_invite: false,
                can_remove: false,
                code: true,
            })
        );
        assert_eq!(
            parse("/accept --code 1234-5678"),
            Ok(Command::AcceptCode(None, "1234-5678".into()))
        );
        assert_eq!(
            parse("/accept ab12 --code 12345678"),
            Ok(Command::AcceptCode(Some("ab12".into()), "12345678".into()))
        );
        assert!(parse("/accept --code").is_err());
        assert_eq!(parse("/remove carol"), Ok(Command::Remove("carol".into())));
        assert_eq!(parse("/leave"), Ok(Command::Leave));
        assert_eq!(parse("/transfer bob"), Ok(Command::Transfer("bob".into())));
        assert!(parse("/transfer").is_err());
        assert_eq!(parse("/rotate --rn1"), Ok(Command::Rotate { rn1: true }));
        assert_eq!(parse("/rotate"), Ok(Command::Rotate { rn1: false }));
        assert_eq!(
            parse("/verify bob --confirm"),
            Ok(Command::Verify {
                user: "bob".into(),
                confirm: true
            })
        );
        assert_eq!(parse("/members"), Ok(Command::Members));
        assert_eq!(parse("/accept"), Ok(Command::Accept(None)));
        assert_eq!(
            parse("/decline 00ab"),
            Ok(Command::Decline(Some("00ab".into())))
        );
        assert_eq!(parse("/help"), Ok(Command::Help));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
    }

    #[test]
    fn mistakes_are_explained() {
        assert_eq!(parse("/remove").unwrap_err(), "usage: /remove USER");
        assert_eq!(parse("/create").unwrap_err(), "usage: /create NAME");
        assert_eq!(parse("/leave now").unwrap_err(), "/leave takes no argument");
        assert_eq!(
            parse("/rotate --rn2").unwrap_err(),
            "/rotate does not take --rn2"
        );
        assert!(parse("/frobnicate").unwrap_err().contains("/help"));
    }
}
