/*
 * instar spawn trampoline, Linux aarch64: the same steps and the same
 * struct spawn_args as x86_64.S (see there); raw syscalls only.
 *
 *   long instar_spawn(struct spawn_args *a);   returns the child pid, or -errno of clone
 */

	.equ	SYS_fcntl, 25
	.equ	SYS_chdir, 49
	.equ	SYS_exit_group, 94
	.equ	SYS_rt_sigaction, 134
	.equ	SYS_rt_sigprocmask, 135
	.equ	SYS_clone, 220
	.equ	SYS_execve, 221
	.equ	SYS_close_range, 436
	.equ	CLOSE_RANGE_CLOEXEC, 4
	.equ	SIG_SETMASK, 2
	.equ	F_SETFD, 2
	.equ	CLONE_FLAGS, 0x4111 /* CLONE_VM | CLONE_VFORK | SIGCHLD */

	.text
	.globl	instar_spawn
instar_spawn:
	stp	x19, x20, [sp, #-32]!
	str	x21, [sp, #16]
	mov	x19, x0

	/* rt_sigprocmask(SIG_SETMASK, &full, &saved, 8) */
	mov	x8, #SYS_rt_sigprocmask
	mov	x0, #SIG_SETMASK
	add	x1, x19, #72
	add	x2, x19, #64
	mov	x3, #8
	svc	#0
	tbnz	x0, #63, .Lreturn

	/* clone(flags, child stack, NULL, 0, NULL); aarch64 order: ptid, tls, ctid */
	mov	x8, #SYS_clone
	mov	x0, #CLONE_FLAGS
	ldr	x1, [x19, #48]
	mov	x2, xzr
	mov	x3, xzr
	mov	x4, xzr
	svc	#0
	cbz	x0, .Lchild

	/* parent: restore the mask, return pid or -errno */
	mov	x20, x0
	mov	x8, #SYS_rt_sigprocmask
	mov	x0, #SIG_SETMASK
	add	x1, x19, #64
	mov	x2, xzr
	mov	x3, #8
	svc	#0
	mov	x0, x20
.Lreturn:
	ldr	x21, [sp, #16]
	ldp	x19, x20, [sp], #32
	ret

.Lchild:
	/* every signal but SIGKILL (9) and SIGSTOP (19) back to SIG_DFL */
	mov	x20, #1
.Lsig_loop:
	cmp	x20, #9
	b.eq	.Lsig_next
	cmp	x20, #19
	b.eq	.Lsig_next
	mov	x8, #SYS_rt_sigaction
	mov	x0, x20
	add	x1, x19, #88
	mov	x2, xzr
	mov	x3, #8
	svc	#0
.Lsig_next:
	add	x20, x20, #1
	cmp	x20, #64
	b.ls	.Lsig_loop

	/* close_range(3, ~0, CLOSE_RANGE_CLOEXEC) */
	mov	x21, #4
	mov	x8, #SYS_close_range
	mov	x0, #3
	mov	x1, #0xffffffff
	mov	x2, #CLOSE_RANGE_CLOEXEC
	svc	#0
	tbnz	x0, #63, .Lfail

	/* fcntl(fd, F_SETFD, 0) for each listed fd */
	mov	x21, #1
	mov	x20, xzr
.Lfd_loop:
	ldr	x9, [x19, #40]
	cmp	x20, x9
	b.hs	.Lfd_done
	ldr	x9, [x19, #32]
	ldrsw	x0, [x9, x20, lsl #2]
	mov	x8, #SYS_fcntl
	mov	x1, #F_SETFD
	mov	x2, xzr
	svc	#0
	tbnz	x0, #63, .Lfail
	add	x20, x20, #1
	b	.Lfd_loop
.Lfd_done:

	/* chdir(cwd) if asked */
	mov	x21, #2
	ldr	x0, [x19, #24]
	cbz	x0, .Lno_cwd
	mov	x8, #SYS_chdir
	svc	#0
	tbnz	x0, #63, .Lfail
.Lno_cwd:

	/* rt_sigprocmask(SIG_SETMASK, &empty, NULL, 8) */
	mov	x8, #SYS_rt_sigprocmask
	mov	x0, #SIG_SETMASK
	add	x1, x19, #80
	mov	x2, xzr
	mov	x3, #8
	svc	#0

	mov	x21, #3
	mov	x8, #SYS_execve
	ldr	x0, [x19, #0]
	ldr	x1, [x19, #8]
	ldr	x2, [x19, #16]
	svc	#0

.Lfail:
	neg	w0, w0
	str	w0, [x19, #56]
	str	w21, [x19, #60]
	mov	x8, #SYS_exit_group
	mov	x0, #127
	svc	#0
	brk	#0
