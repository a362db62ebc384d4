#![no_main]
//! See `pushwire_fuzz::topic_match`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: pushwire_fuzz::topic_match::Input| pushwire_fuzz::topic_match::check(input));
