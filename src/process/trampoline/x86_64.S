/*
 * instar spawn trampoline, Linux x86_64. Raw syscalls only: the child shares
 * the parent's memory (CLONE_VM) and must never touch libc or JavaScript.
 *
 *   long instar_spawn(struct spawn_args *a);   returns the child pid, or -errno of clone
 *
 * struct spawn_args (every field 8 bytes unless noted; built by src/spawn.ts):
 *     0  const char *path
 *     8  char *const *argv          NULL-terminated
 *    16  char *const *envp          NULL-terminated
 *    24  const char *cwd            NULL: stay in the parent's directory
 *    32  const int *fds             fds whose FD_CLOEXEC is cleared in the child
 *    40  long nfds
 *    48  void *child_stack_top      16-byte aligned
 *    56  int err                    out: errno of the failed step (0: execve succeeded)
 *    60  int step                   out: 1 fcntl, 2 chdir, 3 execve, 4 close_range
 *    64  u64 saved_mask             scratch: the parent's signal mask
 *    72  u64 full_mask              all ones
 *    80  u64 empty_mask             zero
 *    88  struct kernel_sigaction    32 zero bytes: SIG_DFL, no flags
 *
 * The parent blocks every signal around clone so that no handler of the
 * runtime ever runs in the child; CLONE_VFORK suspends the parent until the
 * child has called execve or exited, so `err` is final when clone returns.
 */

	.equ	SYS_rt_sigaction, 13
	.equ	SYS_rt_sigprocmask, 14
	.equ	SYS_clone, 56
	.equ	SYS_execve, 59
	.equ	SYS_fcntl, 72
	.equ	SYS_chdir, 80
	.equ	SYS_exit_group, 231
	.equ	SYS_close_range, 436
	.equ	CLOSE_RANGE_CLOEXEC, 4
	.equ	SIG_SETMASK, 2
	.equ	F_SETFD, 2
	.equ	CLONE_FLAGS, 0x4111 /* CLONE_VM | CLONE_VFORK | SIGCHLD */

	.text
	.globl	instar_spawn
instar_spawn:
	push	%rbx
	push	%r12
	push	%r13
	mov	%rdi, %rbx

	/* rt_sigprocmask(SIG_SETMASK, &full, &saved, 8) */
	mov	$SYS_rt_sigprocmask, %eax
	mov	$SIG_SETMASK, %edi
	lea	72(%rbx), %rsi
	lea	64(%rbx), %rdx
	mov	$8, %r10d
	syscall
	test	%rax, %rax
	js	.Lreturn

	/* clone(flags, child stack, NULL, NULL, 0) */
	mov	$SYS_clone, %eax
	mov	$CLONE_FLAGS, %edi
	mov	48(%rbx), %rsi
	xor	%edx, %edx
	xor	%r10d, %r10d
	xor	%r8d, %r8d
	syscall
	test	%rax, %rax
	jz	.Lchild

	/* parent: restore the mask, return pid or -errno */
	mov	%rax, %r12
	mov	$SYS_rt_sigprocmask, %eax
	mov	$SIG_SETMASK, %edi
	lea	64(%rbx), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	mov	%r12, %rax
.Lreturn:
	pop	%r13
	pop	%r12
	pop	%rbx
	ret

.Lchild:
	/* every signal but SIGKILL (9) and SIGSTOP (19) back to SIG_DFL:
	   ignored dispositions would survive execve */
	mov	$1, %r12d
.Lsig_loop:
	cmp	$9, %r12d
	je	.Lsig_next
	cmp	$19, %r12d
	je	.Lsig_next
	mov	$SYS_rt_sigaction, %eax
	mov	%r12d, %edi
	lea	88(%rbx), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
.Lsig_next:
	inc	%r12d
	cmp	$64, %r12d
	jbe	.Lsig_loop

	/* close_range(3, ~0, CLOSE_RANGE_CLOEXEC): no fd beyond stdio and the
	   listed ones survives execve, whatever the parent inherited itself */
	mov	$4, %r13d
	mov	$SYS_close_range, %eax
	mov	$3, %edi
	mov	$-1, %esi
	mov	$CLOSE_RANGE_CLOEXEC, %edx
	syscall
	test	%rax, %rax
	js	.Lfail

	/* fcntl(fd, F_SETFD, 0) for each listed fd: clears FD_CLOEXEC */
	mov	$1, %r13d
	xor	%r12d, %r12d
.Lfd_loop:
	cmp	40(%rbx), %r12
	jae	.Lfd_done
	mov	32(%rbx), %rax
	movslq	(%rax,%r12,4), %rdi
	mov	$SYS_fcntl, %eax
	mov	$F_SETFD, %esi
	xor	%edx, %edx
	syscall
	test	%rax, %rax
	js	.Lfail
	inc	%r12
	jmp	.Lfd_loop
.Lfd_done:

	/* chdir(cwd) if asked */
	mov	$2, %r13d
	mov	24(%rbx), %rdi
	test	%rdi, %rdi
	jz	.Lno_cwd
	mov	$SYS_chdir, %eax
	syscall
	test	%rax, %rax
	js	.Lfail
.Lno_cwd:

	/* rt_sigprocmask(SIG_SETMASK, &empty, NULL, 8); execve inherits the mask */
	mov	$SYS_rt_sigprocmask, %eax
	mov	$SIG_SETMASK, %edi
	lea	80(%rbx), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall

	mov	$3, %r13d
	mov	$SYS_execve, %eax
	mov	0(%rbx), %rdi
	mov	8(%rbx), %rsi
	mov	16(%rbx), %rdx
	syscall

.Lfail:
	/* report -rax and the step through the shared memory, then exit */
	neg	%eax
	mov	%eax, 56(%rbx)
	mov	%r13d, 60(%rbx)
	mov	$SYS_exit_group, %eax
	mov	$127, %edi
	syscall
	hlt
