#![no_main]
//! See `pushwire_fuzz::cursor`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: pushwire_fuzz::cursor::Input| pushwire_fuzz::cursor::check(input));
