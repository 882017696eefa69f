; Real mode → protected mode → ring 3, as an OS kernel does it: LGDT, CR0.PE, far JMP to 32-bit
; code, data segments, an IDT (#UD, #GP, #PF, INT 0x80 as a DPL-3 trap gate), a 32-bit TSS with
; SS0:ESP0, LTR, IRET to ring 3. Ring 3 makes a system call, then runs privileged and
; IOPL-sensitive instructions; the #GP handler records each and skips it. A final INT 0x80
; with EAX = 0 halts at ring 0.

%include "common.inc"
org LOAD_ADDR

SEL_TSS     equ 0x28
KSTACK      equ 0x9E000         ; ESP0 in the TSS
USTACK      equ 0x80000

r_sys_count         equ RESULTS + 0x04
r_sys_cs            equ RESULTS + 0x08
r_sys_cpl           equ RESULTS + 0x0C
r_sys_eip           equ RESULTS + 0x10
r_sys_ss            equ RESULTS + 0x14
r_sys_esp           equ RESULTS + 0x18
r_sys_eflags        equ RESULTS + 0x1C
r_sys_handler_ss    equ RESULTS + 0x20
r_sys_handler_esp   equ RESULTS + 0x24
r_sys_ret           equ RESULTS + 0x28
r_ud_eip            equ RESULTS + 0x2C
r_ud_cs             equ RESULTS + 0x30
r_user_ebx          equ RESULTS + 0x34
r_exit_cpl          equ RESULTS + 0x38
r_unexpected        equ RESULTS + 0x3C
r_gp_count          equ RESULTS + 0x40
r_user_fs           equ RESULTS + 0x44  ; FS after the IRET from a handler that loaded a ring-0 FS
r_user_ds           equ RESULTS + 0x48
; #GP log: 6 entries of (error code, EIP, first opcode byte).
r_gp0_err           equ RESULTS + 0x50
r_gp0_eip           equ RESULTS + 0x54
r_gp0_op            equ RESULTS + 0x58
r_gp1_err           equ RESULTS + 0x5C
r_gp1_eip           equ RESULTS + 0x60
r_gp1_op            equ RESULTS + 0x64
r_gp2_err           equ RESULTS + 0x68
r_gp2_eip           equ RESULTS + 0x6C
r_gp2_op            equ RESULTS + 0x70
r_gp3_err           equ RESULTS + 0x74
r_gp3_eip           equ RESULTS + 0x78
r_gp3_op            equ RESULTS + 0x7C
r_gp4_err           equ RESULTS + 0x80
r_gp4_eip           equ RESULTS + 0x84
r_gp4_op            equ RESULTS + 0x88
r_gp5_err           equ RESULTS + 0x8C
r_gp5_eip           equ RESULTS + 0x90
r_gp5_op            equ RESULTS + 0x94
r_gp6_err           equ RESULTS + 0x98
r_gp6_eip           equ RESULTS + 0x9C
r_gp6_op            equ RESULTS + 0xA0
GP_ENTRY            equ 12

start:
    ENTER_PM32 pm_main, 0x9F000

pm_main:
    SET_GATE 6, ud_handler, GATE_INT32, idt
    SET_GATE 13, gp_handler, GATE_INT32, idt
    SET_GATE 14, pf_handler, GATE_INT32, idt
    SET_GATE 0x80, sys_handler, GATE_TRAP32_U, idt
    lidt [idt_desc]
    mov dword [tss + 4], KSTACK         ; ESP0
    mov word [tss + 8], SEL_DATA0       ; SS0
    mov word [tss + 102], 104           ; I/O map base past the limit: no bitmap, all ports #GP
    mov ax, SEL_TSS
    ltr ax
    ; IRET to ring 3 with IF = 1, IOPL = 0.
    push dword SEL_DATA3
    push dword USTACK
    push dword 0x202
    push dword SEL_CODE3
    push dword user
    iretd

; ---- ring 3 ----
user:
    mov ax, SEL_DATA3                   ; IRET to ring 3 nulled the ring-0 data segments
    mov ds, ax
    mov es, ax
    mov fs, ax
    push dword 0xCAFEF00D
    mov eax, 1
    int 0x80
u_after_int:
    mov [r_sys_ret], eax
    mov dx, fs                          ; nulled by the IRET to ring 3 (DPL 0 < CPL 3)
    movzx edx, dx
    mov [r_user_fs], edx
    mov dx, ds                          ; DPL 3: kept
    movzx edx, dx
    mov [r_user_ds], edx
    mov cx, SEL_DATA0
u_cli:
    cli                                 ; IOPL 0 < CPL 3: #GP(0)
u_hlt:
    hlt                                 ; privileged: #GP(0)
u_movcr:
    mov eax, cr0                        ; privileged: #GP(0)
u_in:
    in al, 0x60                         ; IOPL 0, no I/O bitmap: #GP(0)
u_sti:
    sti                                 ; #GP(0)
u_movds:
    mov ds, cx                          ; DPL 0 data segment at CPL 3: #GP(0x10)
u_ud2:
    ud2
u_int13:
    int 13                              ; gate DPL 0 < CPL 3: #GP(13 * 8 + 2)
    pop ebx
    mov [r_user_ebx], ebx
    xor eax, eax                        ; exit
    int 0x80
    jmp $

; ---- ring 0 handlers ----
sys_handler:
    test eax, eax
    jz .exit
    inc dword [r_sys_count]
    mov [r_sys_handler_esp], esp
    mov [r_sys_handler_ss], ss
    mov ecx, [esp]
    mov [r_sys_eip], ecx
    movzx ecx, word [esp + 4]
    mov [r_sys_cs], ecx
    and ecx, 3
    mov [r_sys_cpl], ecx
    mov ecx, [esp + 8]
    mov [r_sys_eflags], ecx
    mov ecx, [esp + 12]
    mov [r_sys_esp], ecx
    movzx ecx, word [esp + 16]
    mov [r_sys_ss], ecx
    mov cx, SEL_DATA0                   ; a kernel loads its own data segment ...
    mov fs, cx                          ; ... which IRET to ring 3 must not leave in FS
    mov eax, 0x12345678
    iretd
.exit:
    movzx ecx, word [esp + 4]
    and ecx, 3
    mov [r_exit_cpl], ecx
    FINISH

gp_handler:
    pushad
    mov ebx, [r_gp_count]
    imul ebx, ebx, GP_ENTRY
    mov eax, [esp + 32]                 ; error code
    mov [r_gp0_err + ebx], eax
    mov esi, [esp + 36]                 ; faulting EIP
    mov [r_gp0_eip + ebx], esi
    movzx eax, byte [esi]
    mov [r_gp0_op + ebx], eax
    inc dword [r_gp_count]
    ; Skip the instruction: the few opcodes the user code faults on.
    mov ecx, 1
    cmp al, 0x0F                        ; MOV r32, CRn: 0F 20 /r
    jne .not_0f
    mov ecx, 3
.not_0f:
    cmp al, 0xE4                        ; IN AL, imm8
    je .two
    cmp al, 0x8E                        ; MOV Sreg, r16
    je .two
    cmp al, 0xCD                        ; INT imm8
    jne .skip
.two:
    mov ecx, 2
.skip:
    add [esp + 36], ecx
    popad
    add esp, 4                          ; pop the error code
    iretd

ud_handler:
    push eax
    mov eax, [esp + 4]
    mov [r_ud_eip], eax
    movzx eax, word [esp + 8]
    mov [r_ud_cs], eax
    add dword [esp + 4], 2              ; skip UD2
    pop eax
    iretd

pf_handler:
    mov dword [r_unexpected], 14
    hlt

; ---- tables ----
align 8
gdt:
    STD_GDT
    SYS_DESC ABS(tss), 103, 0x89        ; 0x28: 32-bit TSS, available
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd idt
align 8
tss:
    times 104 db 0
align 8
idt:
    times 256 * 8 db 0
