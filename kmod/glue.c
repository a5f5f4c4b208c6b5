// SPDX-License-Identifier: GPL-2.0
/*
 * C glue for yakvm: the kernel helpers that are static inline or macros (so Rust cannot
 * call them) and compile-time checks that the #[repr(C)] layouts in ffi/chardev.rs match
 * the kernel headers. No policy lives here.
 */
#include <linux/anon_inodes.h>
#include <asm/fpu/api.h>
#include <linux/eventfd.h>
#include <linux/err.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/hrtimer.h>
#include <linux/io.h>
#include <linux/irqflags.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/poll.h>
#include <linux/preempt.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/sched/stat.h>
#include <linux/smp.h>
#include <linux/stddef.h>
#include <linux/timekeeping.h>
#include <linux/wait.h>
#include <asm/tsc.h>

#include "glue.h"

/* ffi/chardev.rs mirrors struct miscdevice: keep these in step with it. */
static_assert(offsetof(struct miscdevice, minor) == 0);
static_assert(offsetof(struct miscdevice, name) == 8);
static_assert(offsetof(struct miscdevice, fops) == 16);
static_assert(offsetof(struct miscdevice, mode) == 72);
static_assert(sizeof(struct miscdevice) == 80);
static_assert(MISC_DYNAMIC_MINOR == 255);

void *yakvm_pages_alloc(unsigned int order)
{
	return (void *)__get_free_pages(GFP_KERNEL | __GFP_ZERO, order);
}

void yakvm_pages_free(void *addr, unsigned int order)
{
	free_pages((unsigned long)addr, order);
}

u64 yakvm_virt_to_phys(void *addr)
{
	return virt_to_phys(addr);
}

struct page *yakvm_virt_to_page(void *addr)
{
	return virt_to_page(addr);
}

u64 yakvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

void yakvm_on_each_cpu(void (*func)(void *), void *info)
{
	on_each_cpu(func, info, 1);
}

unsigned int yakvm_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

int yakvm_smp_processor_id(void)
{
	return smp_processor_id();
}

void yakvm_preempt_disable(void)
{
	preempt_disable();
}

void yakvm_preempt_enable(void)
{
	preempt_enable();
}

/* After a context switch the FPU registers are loaded lazily, on the way back to user
 * mode: make them the current task's (the guest's, during RUN) before VMRUN, as KVM's
 * vcpu_enter_guest does. Interrupts are off. */
void yakvm_fpu_load_current(void)
{
	if (test_thread_flag(TIF_NEED_FPU_LOAD))
		switch_fpu_return();
}

void yakvm_local_irq_disable(void)
{
	local_irq_disable();
}

void yakvm_local_irq_enable(void)
{
	local_irq_enable();
}

/*
 * A reschedule IPI to this CPU (interrupts off: it stays pending): the guest entered next
 * exits at its first instruction boundary. KVM's __kvm_request_immediate_exit.
 */
void yakvm_self_ipi(void)
{
	arch_smp_send_reschedule(smp_processor_id());
}

void *yakvm_file_private(struct file *file)
{
	return file->private_data;
}

void yakvm_file_set_private(struct file *file, void *data)
{
	file->private_data = data;
}

void yakvm_vma_range(struct vm_area_struct *vma, unsigned long *start,
		     unsigned long *end, unsigned long *pgoff)
{
	*start = vma->vm_start;
	*end = vma->vm_end;
	*pgoff = vma->vm_pgoff;
}

/* The run page must never be copied into a child or grown with mremap. */
void yakvm_vma_set_dontcopy(struct vm_area_struct *vma)
{
	vm_flags_set(vma, VM_DONTCOPY | VM_DONTEXPAND);
}

void yakvm_get_page(struct page *page)
{
	get_page(page);
}

void yakvm_put_page(struct page *page)
{
	put_page(page);
}

void *yakvm_page_address(struct page *page)
{
	return page_address(page);
}

/*
 * The eventfd of descriptor `fd` of the calling process, with a reference taken; NULL and
 * the error in *err if `fd` is not an eventfd (eventfd_ctx_fdget returns an ERR_PTR).
 */
struct eventfd_ctx *yakvm_eventfd_get(int fd, int *err)
{
	struct eventfd_ctx *ctx = eventfd_ctx_fdget(fd);

	if (IS_ERR(ctx)) {
		*err = PTR_ERR(ctx);
		return NULL;
	}
	*err = 0;
	return ctx;
}

/* eventfd_signal is static inline in 6.12. */
void yakvm_eventfd_signal(struct eventfd_ctx *ctx)
{
	eventfd_signal(ctx);
}

void yakvm_eventfd_put(struct eventfd_ctx *ctx)
{
	eventfd_ctx_put(ctx);
}

/*
 * The kernel APIC's wake-up machinery for one vCPU (ffi/apic.rs): the APIC timer on an
 * hrtimer, a wait queue the vCPU sleeps on while it halts, and the kick that makes it look
 * at its APIC again. `kicked` is set by whoever changed the APIC's state (another vCPU's
 * IPI, a message from userspace, the timer) after the change; the vCPU clears it before it
 * looks. `running_cpu` is the CPU the vCPU runs the guest on, or -1: a kick sends that CPU
 * a reschedule IPI, which makes the guest exit (the INTR intercept), as KVM's
 * kvm_vcpu_kick. Policy (what the APIC holds) lives in Rust.
 */
struct yakvm_apic_hw {
	struct hrtimer timer;
	wait_queue_head_t wq;
	atomic_t kicked;
	atomic_t running_cpu;
};

void yakvm_apic_kick(struct yakvm_apic_hw *hw)
{
	int cpu;

	/*
	 * Only the kick that sets the flag wakes or interrupts the vCPU: while it is set,
	 * the vCPU has not looked yet and will (its entry checks the flag with interrupts
	 * off), so more reschedule IPIs would only make it exit again right after VMRUN
	 * (an IPI storm's target made little progress). atomic_xchg is a full barrier: the
	 * flag before the CPU, pairing with the barrier in yakvm_apic_set_running.
	 */
	if (atomic_xchg(&hw->kicked, 1))
		return;
	wake_up_interruptible(&hw->wq);
	cpu = atomic_read(&hw->running_cpu);
	if (cpu >= 0)
		arch_smp_send_reschedule(cpu);
}

static enum hrtimer_restart yakvm_apic_timer_fn(struct hrtimer *timer)
{
	yakvm_apic_kick(container_of(timer, struct yakvm_apic_hw, timer));
	return HRTIMER_NORESTART;
}

/* spin_lock_irqsave as a function (ffi/irqlock.rs): the flags to give back. */
unsigned long yakvm_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void yakvm_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

struct yakvm_apic_hw *yakvm_apic_hw_new(void)
{
	struct yakvm_apic_hw *hw = kzalloc(sizeof(*hw), GFP_KERNEL);

	if (!hw)
		return NULL;
	hrtimer_init(&hw->timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
	hw->timer.function = yakvm_apic_timer_fn;
	init_waitqueue_head(&hw->wq);
	atomic_set(&hw->running_cpu, -1);
	return hw;
}

void yakvm_apic_hw_free(struct yakvm_apic_hw *hw)
{
	hrtimer_cancel(&hw->timer);
	kfree(hw);
}

/* Arms the timer for `deadline_ns` (CLOCK_MONOTONIC), or cancels it for U64_MAX. */
void yakvm_apic_timer_arm(struct yakvm_apic_hw *hw, u64 deadline_ns)
{
	if (deadline_ns == U64_MAX)
		hrtimer_try_to_cancel(&hw->timer);
	else
		hrtimer_start(&hw->timer, ns_to_ktime(deadline_ns), HRTIMER_MODE_ABS);
}

u64 yakvm_now_ns(void)
{
	return ktime_get_ns();
}

/* The TSC's rate in kHz as the kernel calibrated it (0 if it has none). */
unsigned int yakvm_tsc_khz(void)
{
	return tsc_khz;
}

/* Clears the kick; whether there was one. */
int yakvm_apic_take_kick(struct yakvm_apic_hw *hw)
{
	return atomic_xchg(&hw->kicked, 0);
}

int yakvm_apic_kicked(struct yakvm_apic_hw *hw)
{
	return atomic_read(&hw->kicked);
}

/* The vCPU enters the guest on `cpu` (-1: it left). */
void yakvm_apic_set_running(struct yakvm_apic_hw *hw, int cpu)
{
	atomic_set(&hw->running_cpu, cpu);
	/* The CPU before the flag is read: pairs with the barrier in yakvm_apic_kick. */
	smp_mb__after_atomic();
}

/*
 * The longest a halted vCPU polls for a wake-up before it sleeps (vcpu/apic.rs HaltPoll),
 * as KVM's halt_poll_ns and with its x86 default; 0 turns polling off. Writable while VMs
 * run: /sys/module/yakvm/parameters/halt_poll_ns (each vCPU reads it at its next halt).
 */
static unsigned int halt_poll_ns = 200000;
module_param(halt_poll_ns, uint, 0644);
MODULE_PARM_DESC(halt_poll_ns, "longest a halted vCPU polls for a wake-up before it sleeps, ns (0: never)");

unsigned int yakvm_halt_poll_ns(void)
{
	return READ_ONCE(halt_poll_ns);
}

/*
 * Whether another task wants this CPU: a halted vCPU's poll for a kick stops (as KVM's
 * kvm_vcpu_can_poll). Racy by nature, and harmless: a task that became runnable just
 * after is seen at the next look, or at the latest when the poll's time runs out.
 */
int yakvm_cpu_wanted(void)
{
	return need_resched() || !single_task_running();
}

/* Sleeps until a kick or a signal: 0, or -ERESTARTSYS for a signal. */
int yakvm_apic_wait(struct yakvm_apic_hw *hw)
{
	return wait_event_interruptible(hw->wq, atomic_read(&hw->kicked));
}

/*
 * IRQFD (ffi/irqfd.rs): an eventfd whose signal makes the module deliver an interrupt
 * message, with no userspace and no other thread on the way. Our entry on the eventfd's
 * wait queue is called by eventfd_signal/write under the queue's lock, in the signaller's
 * context (a task, or an interrupt handler): it takes the count (eventfd_ctx_do_read) and
 * calls `deliver(owner)` there, which takes only locks that keep interrupts off
 * (ffi/irqlock.rs) and kicks the target vCPUs (as KVM's irqfd_wakeup delivers an MSI with
 * kvm_arch_set_irq_inatomic). Signals while a vCPU has not yet taken the vector make one
 * interrupt, as edges merge on a real interrupt line. The binding keeps a reference on
 * the eventfd's context (whose wait queue it is on), not on its file: closing the
 * descriptor does not end it (EPOLLHUP is ignored), only yakvm_irqfd_free does.
 */
struct yakvm_irqfd {
	wait_queue_entry_t wait;
	poll_table pt;
	struct eventfd_ctx *ctx;
	void (*deliver)(void *owner);
	void *owner;
};

static int yakvm_irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct yakvm_irqfd *irqfd = container_of(wait, struct yakvm_irqfd, wait);
	u64 count;

	if (key_to_poll(key) & EPOLLIN) {
		/* The queue's lock is held: the count is ours to take. */
		eventfd_ctx_do_read(irqfd->ctx, &count);
		irqfd->deliver(irqfd->owner);
	}
	return 0;
}

static void yakvm_irqfd_queue(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct yakvm_irqfd *irqfd = container_of(pt, struct yakvm_irqfd, pt);

	add_wait_queue(wqh, &irqfd->wait);
}

/*
 * Binds eventfd `fd` of the calling process: from now on each signal calls
 * `deliver(owner)` in the signaller's context. NULL and the error in *err if `fd` is not
 * an open eventfd or memory is short. A count already there delivers once at once.
 */
struct yakvm_irqfd *yakvm_irqfd_new(int fd, void (*deliver)(void *owner), void *owner, int *err)
{
	struct yakvm_irqfd *irqfd;
	struct eventfd_ctx *ctx;
	struct fd f;
	__poll_t events;

	irqfd = kzalloc(sizeof(*irqfd), GFP_KERNEL_ACCOUNT);
	if (!irqfd) {
		*err = -ENOMEM;
		return NULL;
	}
	f = fdget(fd);
	if (!fd_file(f)) {
		kfree(irqfd);
		*err = -EBADF;
		return NULL;
	}
	ctx = eventfd_ctx_fileget(fd_file(f));
	if (IS_ERR(ctx)) {
		fdput(f);
		kfree(irqfd);
		*err = PTR_ERR(ctx);
		return NULL;
	}
	irqfd->ctx = ctx;
	irqfd->deliver = deliver;
	irqfd->owner = owner;
	init_waitqueue_func_entry(&irqfd->wait, yakvm_irqfd_wakeup);
	init_poll_funcptr(&irqfd->pt, yakvm_irqfd_queue);
	events = vfs_poll(fd_file(f), &irqfd->pt);
	if (events & EPOLLIN)
		deliver(owner);
	fdput(f);
	*err = 0;
	return irqfd;
}

/* Whether `irqfd` waits on the eventfd of descriptor `fd` (for a deassign). */
int yakvm_irqfd_is(struct yakvm_irqfd *irqfd, int fd)
{
	struct eventfd_ctx *ctx = eventfd_ctx_fdget(fd);
	int same;

	if (IS_ERR(ctx))
		return 0;
	same = ctx == irqfd->ctx;
	eventfd_ctx_put(ctx);
	return same;
}

/*
 * Ends the binding: off the wait queue, under the queue's lock, which a running wake-up
 * holds: once this returns, `deliver` is neither running nor called again.
 */
void yakvm_irqfd_free(struct yakvm_irqfd *irqfd)
{
	u64 count;

	eventfd_ctx_remove_wait_queue(irqfd->ctx, &irqfd->wait, &count);
	eventfd_ctx_put(irqfd->ctx);
	kfree(irqfd);
}
