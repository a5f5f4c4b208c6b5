/* SPDX-License-Identifier: GPL-2.0 */
/* The C glue's functions, as ffi/mod.rs declares them to Rust. */
#ifndef YAKVM_GLUE_H
#define YAKVM_GLUE_H

#include <linux/spinlock_types.h>
#include <linux/types.h>

struct eventfd_ctx;
struct file;
struct page;
struct vm_area_struct;
struct yakvm_apic_hw;
struct yakvm_irqfd;

void *yakvm_pages_alloc(unsigned int order);
void yakvm_pages_free(void *addr, unsigned int order);
u64 yakvm_virt_to_phys(void *addr);
struct page *yakvm_virt_to_page(void *addr);
u64 yakvm_page_to_phys(struct page *page);
unsigned int yakvm_nr_cpu_ids(void);
int yakvm_smp_processor_id(void);
void yakvm_preempt_disable(void);
void yakvm_preempt_enable(void);
void yakvm_local_irq_disable(void);
void yakvm_local_irq_enable(void);
void yakvm_self_ipi(void);
void yakvm_fpu_load_current(void);
void *yakvm_file_private(struct file *file);
void yakvm_file_set_private(struct file *file, void *data);
void yakvm_vma_range(struct vm_area_struct *vma, unsigned long *start,
		     unsigned long *end, unsigned long *pgoff);
void yakvm_on_each_cpu(void (*func)(void *), void *info);
void yakvm_vma_set_dontcopy(struct vm_area_struct *vma);
struct eventfd_ctx *yakvm_eventfd_get(int fd, int *err);
void yakvm_eventfd_signal(struct eventfd_ctx *ctx);
void yakvm_eventfd_put(struct eventfd_ctx *ctx);
unsigned long yakvm_spin_lock_irqsave(spinlock_t *lock);
void yakvm_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);
struct yakvm_apic_hw *yakvm_apic_hw_new(void);
void yakvm_apic_hw_free(struct yakvm_apic_hw *hw);
void yakvm_apic_kick(struct yakvm_apic_hw *hw);
void yakvm_apic_timer_arm(struct yakvm_apic_hw *hw, u64 deadline_ns);
u64 yakvm_now_ns(void);
unsigned int yakvm_tsc_khz(void);
int yakvm_apic_take_kick(struct yakvm_apic_hw *hw);
int yakvm_apic_kicked(struct yakvm_apic_hw *hw);
void yakvm_apic_set_running(struct yakvm_apic_hw *hw, int cpu);
int yakvm_apic_wait(struct yakvm_apic_hw *hw);
int yakvm_cpu_wanted(void);
unsigned int yakvm_halt_poll_ns(void);
void yakvm_get_page(struct page *page);
void yakvm_put_page(struct page *page);
void *yakvm_page_address(struct page *page);
struct yakvm_irqfd *yakvm_irqfd_new(int fd, void (*deliver)(void *owner), void *owner, int *err);
int yakvm_irqfd_is(struct yakvm_irqfd *irqfd, int fd);
void yakvm_irqfd_free(struct yakvm_irqfd *irqfd);

#endif
