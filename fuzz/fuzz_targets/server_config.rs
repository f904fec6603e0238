//! Any text as the server configuration file (`duokey-server run --config`):
//! parsed or refused with an error, never a panic; what parses has known
//! roles and paths under its base directory.
#![no_main]

use duokey_server::config::ServerConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/srv/duokey");
    if let Ok(cfg) = ServerConfig::parse(text, base) {
        assert!(cfg.roles().is_ok());
        assert!(cfg.data_dir.starts_with(base) || cfg.data_dir.is_absolute());
        let _ = cfg.db_url("sqlite://x.db");
    }
});
