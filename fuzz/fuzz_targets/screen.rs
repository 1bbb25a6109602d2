//! The screen model's differential property, found by coverage: output
//! bytes → model → redraw; a fresh model fed that redraw must redraw the
//! same (every state the redraw carries survives a round trip). The first
//! byte picks a size (80×24, or a small one where wrapping and scrolling
//! happen sooner).
//!
//! Left out: the older alternate screens 47 and 1047 (switches that save
//! no cursor). With them the primary screen's saved cursor can differ from
//! its cursor behind the alternate screen, which the redraw's 1049 cannot
//! carry: xterm's 1049 saves into DECSC's one slot, tmux keeps a slot of
//! its own for 1049, and the redraw keeps what tmux (the judge of the
//! end-to-end tests) restores.
#![no_main]

use keepsh::protocol::PtySize;
use keepsh::session::screen::Screen;
use libfuzzer_sys::fuzz_target;

/// Whether `output` sets or resets mode 47 or 1047 (`CSI ? … h/l`), as
/// vte (the model's parser) reads it: junk bytes inside a sequence do
/// not hide one.
fn switches_older_alternate(output: &[u8]) -> bool {
    #[derive(Default)]
    struct Finder(bool);
    impl vte::Perform for Finder {
        fn csi_dispatch(&mut self, params: &vte::Params, i: &[u8], _: bool, action: char) {
            let older = |p: &[u16]| p.iter().any(|&mode| mode == 47 || mode == 1047);
            if i == b"?" && matches!(action, 'h' | 'l') && params.iter().any(older) {
                self.0 = true;
            }
        }
    }
    let mut finder = Finder::default();
    vte::Parser::new().advance(&mut finder, output);
    finder.0
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, output)) = data.split_first() else {
        return;
    };
    if switches_older_alternate(output) {
        return;
    }
    let size = if pick & 1 == 0 {
        PtySize::DEFAULT
    } else {
        PtySize::from_request(12, 5, PtySize::DEFAULT)
    };
    let mut model = Screen::new(size);
    model.process(output);
    let (redraw, _) = model.restore("");
    let mut fresh = Screen::new(size);
    fresh.process(&redraw);
    let (again, _) = fresh.restore("");
    if again != redraw {
        panic!(
            "the redraw did not survive a round trip:\n{:?}\n{:?}",
            String::from_utf8_lossy(&redraw),
            String::from_utf8_lossy(&again)
        );
    }
});
