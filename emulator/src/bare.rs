//! Bare VMs for the test programs (`yakvm-selftest`, `yakvm-stress`): RAM at guest-physical
//! 0 with an image at 0, and vCPUs entered there in a given mode, without the devices and
//! checks of `machine`.

use crate::machine::EntryMode;
use crate::{boot, layout, sys};
use yakvm_abi as abi;

pub struct BareVm {
    pub vm: sys::Vm,
    pub mem: sys::GuestMemory,
    pub vcpus: Vec<sys::Vcpu>,
}

/// Stack given to each further vCPU, below the previous one's.
const STACK_PER_VCPU: u64 = 64 << 10;

/// `ram` bytes of RAM holding `image` at 0, and `vcpus` vCPUs about to execute it in `mode`.
pub fn bare_vm(dev: &sys::Device, ram: usize, image: &[u8], mode: EntryMode, vcpus: usize) -> Result<BareVm, String> {
    let vm = dev.create_vm().map_err(|e| e.to_string())?;
    let mem = sys::GuestMemory::new(ram).map_err(|e| e.to_string())?;
    vm.add_memory(0, 0, &mem).map_err(|e| e.to_string())?;
    mem.write(0, image).ok_or("image does not fit in RAM")?;
    let (regs, sregs) = match mode {
        EntryMode::Real => Some(boot::real_mode(0, 0)),
        EntryMode::Protected => boot::protected_mode(&mem, 0),
        EntryMode::Long => boot::long_mode(&mem, 0, 0),
    }
    .ok_or("RAM too small for the boot area")?;
    let mut list = Vec::with_capacity(vcpus);
    for i in 0..vcpus as u64 {
        let vcpu = vm.create_vcpu().map_err(|e| e.to_string())?;
        vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
        let rsp = match mode {
            EntryMode::Real => regs.rsp,
            _ => layout::initial_rsp(ram as u64) - i * STACK_PER_VCPU,
        };
        vcpu.set_regs(&abi::Regs { rsp, ..regs }).map_err(|e| e.to_string())?;
        list.push(vcpu);
    }
    Ok(BareVm { vm, mem, vcpus: list })
}
