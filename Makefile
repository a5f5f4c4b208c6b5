# yakvm: the top-level entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TARGET   := x86_64-unknown-linux-gnu
GUESTS   := hello count sse cpu mmio hypercall triple spin ports disk disk_mmio real16 prot32 hostile writer pc_timer pc_uart pc_mmio_ticks pc_hostile pc_acpi pc_pci pc_kbd pc_ide apic_timer_minute pc_pcidev diskread bench_pio bench_mmio bench_cpuid bench_timer step16 step32 step64 debuggee smp smp_storm smp_silent smp_initbsp bench_ipi bench_apictimer bench_apicread bench_x2apicread ctlregs exitstorm apicread apic_hostile smp_x2apic ioeventfd lint0 irqfd virtio_hostile net_hostile tsc_deadline
BUILD    := build
SHARES   := shares
# The kernel build directory, computed once and only when a target needs it.
KDIR      = $(eval KDIR := $$(shell scripts/kernel.sh))$(KDIR)
GUEST_OUT = target/$(TARGET)/guest
# CMD reaches the image byte for byte: make must not expand the `$` of a shell command
# (`$(value)` takes it as written, on the command line or in the environment).
override CMD := $(value CMD)
export CMD

.PHONY: help deps kernel guest-kernel module emulator guests initramfs env run debug test bench conformance xv6 soak disk clean

help:
	@echo "yakvm make targets:"
	@echo "  make run            build what is missing, boot the image: demo guest, then a shell"
	@echo "  make run CMD='...'  run one command in the image; fails if the command fails"
	@echo "  make test           run every test (host unit tests and tests in the image)"
	@echo "  make bench          yakvm against KVM, side by side in one boot: a table, CSV in build/"
	@echo "  make conformance    kvm-unit-tests on yakvm and on KVM in one boot (KUT=DIR: the suite's source)"
	@echo "  make xv6            MIT xv6 on yakvm: how far it gets (XV6=DIR: its source)"
	@echo "  make soak           the robustness suite with 20x the guests, ioctls and cycles"
	@echo "  make env            build the image: kernel, initramfs, module, emulator, guests"
	@echo "  make guest-kernel   build the Linux guest: its kernel (cached) and initramfs"
	@echo "  make debug          boot the image stopped, with gdb attached to its kernel"
	@echo "  make disk           create the empty 8 KiB disk image disk.img"
	@echo "  make deps           install the Debian packages and bindgen-cli (as root)"
	@echo "  make clean          remove build outputs (the cached kernel stays in ~/.cache/yakvm)"

deps:
	@scripts/deps.sh

kernel: deps
	@scripts/kernel.sh >/dev/null

# The Linux that yakvm boots as a guest: bzImage in ~/.cache/yakvm, initramfs in build/.
guest-kernel: deps emulator
	@scripts/guest-kernel.sh >/dev/null
	@scripts/guest-initramfs.sh
	@scripts/guest-disk.sh

module: kernel
	@$(MAKE) -s -C kmod KDIR=$(KDIR)

emulator:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p yakvm --target $(TARGET)

guests:
	RUSTFLAGS="-C relocation-model=static" cargo build -q -p yakvm-guests --profile guest --target $(TARGET)
	@mkdir -p $(BUILD)/guests
	@for g in $(GUESTS); do objcopy -O binary $(GUEST_OUT)/$$g $(BUILD)/guests/$$g.bin; done
	@cp $(GUEST_OUT)/hello $(BUILD)/guests/hello.elf
	@# gdb reads the symbols of the debugger tests' guest from its ELF file.
	@cp $(GUEST_OUT)/debuggee $(BUILD)/guests/debuggee.elf
	@# The Multiboot test kernel stays an ELF file (linked at 1 MiB by guest/multiboot.ld).
	@cp $(GUEST_OUT)/multiboot $(BUILD)/guests/multiboot.elf
	@cp $(GUEST_OUT)/multiboot2 $(BUILD)/guests/multiboot2.elf
	@# The PC-boot test kernel: xv6's layout (guest/pcboot.ld), entered by p_paddr.
	@cp $(GUEST_OUT)/pcboot $(BUILD)/guests/pcboot.elf

initramfs: deps
	@scripts/initramfs.sh

# Everything the image sees comes through the share: stage it there.
env: deps kernel guest-kernel module emulator guests initramfs
	@mkdir -p $(SHARES)/bin $(SHARES)/guests $(SHARES)/tests
	@cp kmod/yakvm.ko $(SHARES)/yakvm.ko
	@cp target/$(TARGET)/release/yakvm target/$(TARGET)/release/yakvm-selftest target/$(TARGET)/release/yakvm-stress target/$(TARGET)/release/yakvm-udprr $(SHARES)/bin/
	@cp $(BUILD)/guests/* $(SHARES)/guests/
	@cp tests/image/*.sh $(SHARES)/tests/
	@mkdir -p $(SHARES)/bench && cp bench/image.sh $(SHARES)/bench/
	@mkdir -p $(SHARES)/tests/expected && cp tests/expected/* $(SHARES)/tests/expected/
	@mkdir -p $(SHARES)/kvm
	@cp $(KDIR)/virt/lib/irqbypass.ko $(KDIR)/arch/x86/kvm/kvm.ko $(KDIR)/arch/x86/kvm/kvm-amd.ko $(SHARES)/kvm/
	@mkdir -p $(SHARES)/linux
	@gkdir=$$(scripts/guest-kernel.sh) && cp "$$gkdir/arch/x86/boot/bzImage" $(SHARES)/linux/bzImage
	@cp $(BUILD)/guest-initramfs.cpio.gz $(SHARES)/linux/initramfs.cpio.gz
	@cp $(BUILD)/guest-root.ext4 $(SHARES)/linux/root.ext4
	@scripts/distro-kernel.sh $(SHARES)/debian || echo "[yakvm] no Debian kernel: the test that boots it will fail ($(SHARES)/debian/FETCH-FAILED)"
	@scripts/debian-root.sh $(SHARES)/debian-root $(SHARES)/debian || echo "[yakvm] no Debian root: the tests that boot it will fail ($(SHARES)/debian-root/FETCH-FAILED)"
	@scripts/stage-gdb.sh $(SHARES)/gdb
	@echo "[yakvm] image ready: kernel $(KDIR), share $(SHARES)/"

run: env
	@scripts/qemu.sh

debug: env
	@scripts/debug.sh

test:
	@scripts/test.sh

bench: env
	@scripts/bench.sh

# kvm-unit-tests (not part of the project): built from KUT (default ../shared/kvm-unit-tests)
# if needed, run on yakvm and KVM; docs/conformance.md. CHECK=1: fail on a lost pass.
conformance: env
	@scripts/conformance.sh

# xv6, the teaching OS, on yakvm: how far it gets (scripts/xv6.sh; XV6=DIR: its source,
# default ../shared/xv6; docs/hobby-kernels.md).
xv6: env
	@scripts/xv6.sh

soak: env
	@SOAK=1 QEMU_TIMEOUT=7200 scripts/test.sh robust

disk:
	dd if=/dev/zero of=disk.img bs=512 count=16 status=none
	@echo "disk.img: 8192 bytes (16 sectors of 512)"

clean:
	rm -rf $(BUILD) target $(SHARES)/bench $(SHARES)/kut $(SHARES)/xv6 $(SHARES)/bin $(SHARES)/guests $(SHARES)/tests $(SHARES)/kvm $(SHARES)/linux $(SHARES)/gdb $(SHARES)/bin/gdb $(SHARES)/out $(SHARES)/yakvm.ko $(SHARES)/.run
	-$(MAKE) -s -C kmod KDIR=$(KDIR) clean
