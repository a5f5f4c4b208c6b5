//! The yakvm emulator as a library: the `yakvm` command and the selftests use it.

pub mod boot;
pub mod bus;
pub mod disk;
pub mod insn;
pub mod layout;
pub mod loader;
pub mod machine;
pub mod mmu;
pub mod sys;
