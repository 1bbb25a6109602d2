//! An exec request's string → `Command`, or a usage error that is one line
//! with no raw control bytes (it goes to the client's terminal).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Err(failure) = keepsh::command::parse(&line) {
        assert!(
            !failure.line.chars().any(char::is_control),
            "a control character in {:?}",
            failure.line
        );
    }
});
