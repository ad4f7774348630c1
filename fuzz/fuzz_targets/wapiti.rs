//! Feeds arbitrary bytes to the Wapiti report parser. The contract: no panic, no hang, no memory blow-up;
//! bad input is an `Err` that names the file.
#![no_main]

use cspm_worker::tools::{FindingSink, ReportKind};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "fuzz-input.wapiti";

fuzz_target!(|data: &[u8]| {
    let mut sink = FindingSink::counting();
    if let Err(e) = ReportKind::Wapiti.parse_reader(data, NAME, &mut sink) {
        assert!(e.message.contains(NAME), "the error does not name the file: {e}");
    }
});
