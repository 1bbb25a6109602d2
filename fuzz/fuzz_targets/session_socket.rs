//! Bytes on a session socket → the session process's decoder, as its host
//! reads them: the preamble, the role (`Open`), then an attachment's input
//! or a control connection's requests, until an error or the end. Never a
//! panic; never an allocation beyond the frame limit (run with
//! `-malloc_limit_mb`).
#![no_main]

use std::sync::OnceLock;

use keepsh::protocol::wire::{read_frame, read_preamble};
use keepsh::protocol::{AttachInput, ControlRequest, Open};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

fuzz_target!(|data: &[u8]| {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    });
    runtime.block_on(async {
        let mut reader = data;
        if read_preamble(&mut reader).await.is_err() {
            return;
        }
        let Ok(Some(open)) = read_frame::<_, Open>(&mut reader).await else {
            return;
        };
        for _ in 0..1000 {
            let more = match open {
                Open::Control => read_frame::<_, ControlRequest>(&mut reader)
                    .await
                    .map(|m| m.is_some()),
                _ => read_frame::<_, AttachInput>(&mut reader)
                    .await
                    .map(|m| m.is_some()),
            };
            if !matches!(more, Ok(true)) {
                return;
            }
        }
    });
});
