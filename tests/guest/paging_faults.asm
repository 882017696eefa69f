; Paging as a kernel uses it: an identity map (4 KiB pages for the first 4 MiB, one global 4 MiB
; PSE page at 4 MiB), a not-present page, a read-only user page and a supervisor-only page.
; Ring 3 reads and writes them; the #PF handler records CR2, the error code and EIP, then either
; maps the page (demand paging) or resumes at a fix-up address (an exception table). Ring 0
; writes the read-only page with CR0.WP = 0 and 1. Afterwards the kernel records the PTEs'
; accessed/dirty bits and checks INVLPG and that a global page survives a CR3 reload.

%include "common.inc"
org LOAD_ADDR

SEL_TSS     equ 0x28
KSTACK      equ 0x9E000
USTACK      equ 0x80000
PAGE_DIR    equ 0x20000
PT0         equ 0x21000
PTE_P       equ 1
PTE_RW      equ 2
PTE_US      equ 4
PDE_PS      equ 0x80
PTE_G       equ 0x100

NP_PAGE     equ 0x300000            ; not present until the #PF handler maps it
RO_PAGE     equ 0x301000            ; user, read-only
SUP_PAGE    equ 0x302000            ; supervisor only
IDLE_PAGE   equ 0x303000            ; never touched
WR_PAGE     equ 0x304000            ; written by ring 3
RD_PAGE     equ 0x305000            ; read by ring 3
INV_PAGE    equ 0x306000            ; remapped to 0x307000, then INVLPG
NG_PAGE     equ 0x308000            ; remapped to 0x309000, then CR3 reload
XCODE       equ 0x30BFFD            ; MOV EAX, imm32 crossing into the not-present 0x30C000
XPAGE2      equ 0x30C000
BIG_PAGE    equ 0x400000            ; 4 MiB global page, remapped to 0x800000

%define PTE(lin) (PT0 + ((lin) >> 12) * 4)

r_pf_count      equ RESULTS + 0x04
r_np_val        equ RESULTS + 0x08
r_ro_val        equ RESULTS + 0x0C
r_sup_val       equ RESULTS + 0x10
r_wp0_val       equ RESULTS + 0x14
r_pte_np        equ RESULTS + 0x18
r_pte_ro        equ RESULTS + 0x1C
r_pte_sup       equ RESULTS + 0x20
r_pte_idle      equ RESULTS + 0x24
r_pte_wr        equ RESULTS + 0x28
r_pte_rd        equ RESULTS + 0x2C
r_pde0          equ RESULTS + 0x30
r_pde1          equ RESULTS + 0x34
r_inv_before    equ RESULTS + 0x38
r_inv_after     equ RESULTS + 0x3C
r_big_before    equ RESULTS + 0x40
r_big_after_cr3 equ RESULTS + 0x44
r_big_after_inv equ RESULTS + 0x48
r_ng_before     equ RESULTS + 0x4C
r_ng_after_cr3  equ RESULTS + 0x50
r_cr2_final     equ RESULTS + 0x54
r_unexpected    equ RESULTS + 0x58
; #PF log: (CR2, error code, EIP) × 6.
r_pf0_cr2       equ RESULTS + 0x80
r_pf0_err       equ RESULTS + 0x84
r_pf0_eip       equ RESULTS + 0x88
r_pf1_cr2       equ RESULTS + 0x8C
r_pf1_err       equ RESULTS + 0x90
r_pf1_eip       equ RESULTS + 0x94
r_pf2_cr2       equ RESULTS + 0x98
r_pf2_err       equ RESULTS + 0x9C
r_pf2_eip       equ RESULTS + 0xA0
r_pf3_cr2       equ RESULTS + 0xA4
r_pf3_err       equ RESULTS + 0xA8
r_pf3_eip       equ RESULTS + 0xAC
r_pf4_cr2       equ RESULTS + 0xB0
r_pf4_err       equ RESULTS + 0xB4
r_pf4_eip       equ RESULTS + 0xB8
r_pf5_cr2       equ RESULTS + 0xBC
r_pf5_err       equ RESULTS + 0xC0
r_pf5_eip       equ RESULTS + 0xC4
r_pf6_cr2       equ RESULTS + 0xC8
r_pf6_err       equ RESULTS + 0xCC
r_pf6_eip       equ RESULTS + 0xD0
r_x_eax         equ RESULTS + 0xD4
r_pte_x2        equ RESULTS + 0xD8
PF_ENTRY        equ 12

; Run one instruction that must fault; the #PF handler resumes after it.
%macro EXPECT_PF 1+
    mov dword [pf_fixup], %%resume
    %1
%%resume:
%endmacro

start:
    ENTER_PM32 pm_main, 0x9F000

pm_main:
    SET_GATE 13, unexpected, GATE_INT32, idt
    SET_GATE 14, pf_handler, GATE_INT32, idt
    SET_GATE 0x80, sys_exit, GATE_INT32 | 0x60, idt
    lidt [idt_desc]
    mov dword [tss + 4], KSTACK
    mov word [tss + 8], SEL_DATA0
    mov word [tss + 102], 104
    mov ax, SEL_TSS
    ltr ax

    ; Physical memory contents, written before paging is on.
    mov dword [NP_PAGE + 0x10], 0x5EED0001
    mov dword [RO_PAGE + 0x20], 0x0000AAAA
    mov dword [SUP_PAGE], 0x5A5A5A5A
    mov dword [INV_PAGE], 0x1111
    mov dword [0x307000], 0x2222
    mov dword [NG_PAGE], 0x3333
    mov dword [0x309000], 0x9999
    mov dword [BIG_PAGE], 0x44440000
    mov dword [0x800000], 0x88880000
    ; Code for an instruction fetch that crosses into a not-present page:
    ; B8 78 56 34 12 (MOV EAX, 0x12345678), FF E3 (JMP EBX).
    mov byte [XCODE], 0xB8
    mov dword [XCODE + 1], 0x12345678
    mov word [XCODE + 5], 0xE3FF

    ; Page tables: PT0 identity-maps 0..4 MiB as user/writable, with the exceptions above.
    mov edi, PT0
    mov eax, PTE_P | PTE_RW | PTE_US
    mov ecx, 1024
.fill:
    stosd
    add eax, 0x1000
    loop .fill
    mov dword [PTE(NP_PAGE)], 0
    mov dword [PTE(RO_PAGE)], RO_PAGE | PTE_P | PTE_US
    mov dword [PTE(SUP_PAGE)], SUP_PAGE | PTE_P | PTE_RW
    mov dword [PTE(XPAGE2)], 0
    mov edi, PAGE_DIR
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PAGE_DIR], PT0 | PTE_P | PTE_RW | PTE_US
    mov dword [PAGE_DIR + 4], BIG_PAGE | PTE_P | PTE_RW | PDE_PS | PTE_G
    mov eax, cr4
    or eax, (1 << 4) | (1 << 7)         ; PSE, PGE
    mov cr4, eax
    mov eax, PAGE_DIR
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000                  ; PG (WP stays 0)
    mov cr0, eax

    push dword SEL_DATA3
    push dword USTACK
    push dword 0x202
    push dword SEL_CODE3
    push dword user
    iretd

; ---- ring 3 ----
user:
    mov ax, SEL_DATA3
    mov ds, ax
    mov es, ax
u_np:
    mov eax, [NP_PAGE + 0x10]           ; #PF(U), handler maps the page, the read restarts
    mov [r_np_val], eax
u_ro_w:
    EXPECT_PF mov dword [RO_PAGE + 0x20], 1     ; #PF(P|W|U)
    mov eax, [RO_PAGE + 0x20]
    mov [r_ro_val], eax
    mov eax, 0xFFFFFFFF
u_sup_r:
    EXPECT_PF mov eax, [SUP_PAGE]       ; #PF(P|U)
    mov [r_sup_val], eax                ; the fix-up skipped the load: EAX unchanged
u_sup_w:
    EXPECT_PF mov dword [SUP_PAGE + 4], 2       ; #PF(P|W|U)
    mov dword [WR_PAGE], 3
    mov eax, [RD_PAGE]
    ; Instruction fetches: an instruction straddling into a not-present page (demand-mapped,
    ; then it runs), and a jump into a supervisor page.
    mov ebx, u_xret
    jmp XCODE
u_xret:
    mov [r_x_eax], eax
    EXPECT_PF jmp SUP_PAGE + 0x100
    int 0x80

; ---- ring 0 again ----
kernel2:
    mov ax, SEL_DATA0
    mov ds, ax
    mov es, ax
    ; Supervisor write to a read-only page: allowed while CR0.WP = 0 ...
    mov dword [RO_PAGE + 0x20], 0xBEEF
    mov eax, [RO_PAGE + 0x20]
    mov [r_wp0_val], eax
    ; ... and a #PF(P|W) once it is set.
    mov eax, cr0
    or eax, 1 << 16
    mov cr0, eax
k_wp1:
    EXPECT_PF mov dword [RO_PAGE + 0x24], 4
    mov dword [SUP_PAGE + 8], 5         ; supervisor page, CPL 0: fine

    ; Accessed and dirty bits.
    mov eax, [PTE(NP_PAGE)]
    mov [r_pte_np], eax
    mov eax, [PTE(RO_PAGE)]
    mov [r_pte_ro], eax
    mov eax, [PTE(SUP_PAGE)]
    mov [r_pte_sup], eax
    mov eax, [PTE(IDLE_PAGE)]
    mov [r_pte_idle], eax
    mov eax, [PTE(WR_PAGE)]
    mov [r_pte_wr], eax
    mov eax, [PTE(RD_PAGE)]
    mov [r_pte_rd], eax
    mov eax, [PAGE_DIR]
    mov [r_pde0], eax
    mov eax, [PTE(XPAGE2)]
    mov [r_pte_x2], eax

    ; INVLPG after changing a PTE.
    mov eax, [INV_PAGE]
    mov [r_inv_before], eax
    mov dword [PTE(INV_PAGE)], 0x307000 | PTE_P | PTE_RW
    invlpg [INV_PAGE]
    mov eax, [INV_PAGE]
    mov [r_inv_after], eax

    ; A CR3 reload flushes the non-global page but keeps the global 4 MiB page.
    mov eax, [BIG_PAGE]
    mov [r_big_before], eax
    mov eax, [NG_PAGE]
    mov [r_ng_before], eax
    mov eax, [PAGE_DIR + 4]
    mov [r_pde1], eax
    mov dword [PAGE_DIR + 4], 0x800000 | PTE_P | PTE_RW | PDE_PS | PTE_G
    mov dword [PTE(NG_PAGE)], 0x309000 | PTE_P | PTE_RW
    mov eax, cr3
    mov cr3, eax
    mov eax, [BIG_PAGE]
    mov [r_big_after_cr3], eax
    mov eax, [NG_PAGE]
    mov [r_ng_after_cr3], eax
    invlpg [BIG_PAGE]
    mov eax, [BIG_PAGE]
    mov [r_big_after_inv], eax
    mov eax, cr2
    mov [r_cr2_final], eax
    FINISH

; ---- handlers ----
pf_handler:
    pushad
    push ds
    mov ax, SEL_DATA0
    mov ds, ax
    mov ebx, [r_pf_count]
    imul ebx, ebx, PF_ENTRY
    mov eax, cr2
    mov [r_pf0_cr2 + ebx], eax
    mov ecx, [esp + 36]                 ; error code (above DS and the 8 PUSHAD registers)
    mov [r_pf0_err + ebx], ecx
    mov ecx, [esp + 40]
    mov [r_pf0_eip + ebx], ecx
    inc dword [r_pf_count]
    mov ecx, [pf_fixup]
    test ecx, ecx
    jz .map
    mov [esp + 40], ecx                 ; resume at the fix-up address
    mov dword [pf_fixup], 0
    jmp .out
.map:
    ; Demand paging: map the page user/writable; the faulting instruction runs again.
    and eax, 0xFFFFF000
    mov edx, eax
    shr edx, 10
    or eax, PTE_P | PTE_RW | PTE_US
    mov [PT0 + edx], eax
.out:
    pop ds
    popad
    add esp, 4
    iretd

sys_exit:
    mov esp, 0x9F000
    jmp kernel2

unexpected:
    mov dword [r_unexpected], 13
    hlt

; ---- data ----
pf_fixup:
    dd 0
align 8
gdt:
    STD_GDT
    SYS_DESC ABS(tss), 103, 0x89
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
