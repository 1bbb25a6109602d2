//! `server.toml` text → `Config`, or a `ConfigError` whose line and column
//! are inside the input.
#![no_main]

use std::path::Path;

use keepsh::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent-keepsh-fuzz");
    match Config::parse(text, &base.join("server.toml"), base) {
        Ok(_) => {}
        Err(ConfigError::Invalid { line, column, .. }) => {
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                line >= 1 && line <= lines.len(),
                "line {line} of {}",
                lines.len()
            );
            let width = lines[line - 1].chars().count();
            assert!(
                column >= 1 && column <= width + 1,
                "column {column} of {width}"
            );
        }
        Err(error) => panic!("not about the text: {error}"),
    }
});
