// SPDX-License-Identifier: GPL-2.0
//! The file descriptors userspace holds: `/dev/yakvm`, VMs and vCPUs, with one small
//! method per ioctl called from one `match` each.

use crate::abi;
use crate::ffi::chardev::{self, FileOps, OpenFileOps, Vma};
use crate::svm::vcpu::Vcpu;
use crate::svm::vm::Vm;
use crate::svm::Shared;
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::uaccess::UserSlice;

/// An open `/dev/yakvm`.
pub(crate) struct Control {
    shared: Arc<Shared>,
}

impl OpenFileOps for Control {
    type Context = Shared;
    fn open(shared: &Arc<Shared>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self { shared: shared.clone() }, GFP_KERNEL)?)
    }
}

impl FileOps for Control {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::GET_API_VERSION => Ok(abi::API_VERSION as isize),
            abi::CHECK_CAPABILITY => Ok(this.shared.capability(arg as u64) as isize),
            abi::CREATE_VM => chardev::new_fd(c_str!("yakvm-vm"), Vm::new(this.shared.clone())?),
            _ => Err(ENOTTY),
        }
    }
}

impl FileOps for Vm {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::SET_MEMORY_REGION => {
                let region: abi::MemoryRegion = read_arg(arg)?;
                this.add_region(&region)?;
                Ok(0)
            }
            abi::CREATE_VCPU => chardev::new_fd(c_str!("yakvm-vcpu"), Vcpu::new(this.into())?),
            abi::ENABLE_LAPIC => {
                this.enable_lapic()?;
                Ok(0)
            }
            abi::IOEVENTFD => {
                this.ioeventfd(&read_arg(arg)?)?;
                Ok(0)
            }
            abi::ENABLE_KERNEL_APIC => {
                this.enable_kernel_apic()?;
                Ok(0)
            }
            abi::SIGNAL_MSI => Ok(this.signal_msi(&read_arg(arg)?)? as isize),
            abi::IRQFD => {
                this.irqfd(&read_arg(arg)?)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

impl FileOps for Vcpu {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::RUN => this.run()?,
            abi::GET_REGS => write_arg(arg, &this.get_regs())?,
            abi::SET_REGS => this.set_regs(&read_arg(arg)?),
            abi::GET_SREGS => write_arg(arg, &this.get_sregs())?,
            abi::SET_SREGS => this.set_sregs(&read_arg(arg)?)?,
            abi::GET_VMCB => {
                let mut out = UserSlice::new(arg, core::mem::size_of::<abi::VmcbDump>()).writer();
                this.dump_vmcb(&mut out)?
            }
            abi::GET_STATS => write_arg(arg, &this.stats())?,
            abi::INTERRUPT => this.interrupt(&read_arg(arg)?)?,
            abi::NMI => this.nmi()?,
            abi::GET_MSR_STATS => write_arg(arg, &this.msr_stats())?,
            abi::SET_GUEST_DEBUG => this.set_guest_debug(&read_arg(arg)?)?,
            abi::SET_COALESCED_IO => this.set_coalesced_io(&read_arg(arg)?)?,
            abi::APIC_ACCESS => {
                let mut access: abi::ApicAccess = read_arg(arg)?;
                this.apic_access(&mut access)?;
                write_arg(arg, &access)?
            }
            abi::GET_APIC_STATS => write_arg(arg, &this.apic_stats()?)?,
            abi::APIC_EVENTS => return Ok(this.apic_events()? as isize),
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    fn mmap(this: ArcBorrow<'_, Self>, vma: &mut Vma) -> Result {
        this.map_run(vma)
    }
}

fn read_arg<T: kernel::types::FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, core::mem::size_of::<T>()).reader().read()
}

fn write_arg<T: kernel::types::AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(arg, core::mem::size_of::<T>()).writer().write(value)
}
