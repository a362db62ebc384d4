#![no_main]
//! See `pushwire_fuzz::encode`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: pushwire_fuzz::encode::Input| pushwire_fuzz::encode::check(input));
