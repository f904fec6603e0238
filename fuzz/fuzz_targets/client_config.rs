//! Any text as `client.toml` (SPEC §8): parsed or refused with an error,
//! never a panic; what parses writes back to a file that parses the same.
#![no_main]

use duokey_terminal::ClientConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = ClientConfig::parse(text) {
        let again = cfg.to_toml().expect("a parsed file encodes");
        assert_eq!(ClientConfig::parse(&again).ok(), Some(cfg));
    }
});
