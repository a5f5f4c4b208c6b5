#![no_std]
#![no_main]
yakvm_guests::entry!(main);
fn main() {}
