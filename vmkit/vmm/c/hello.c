/* A freestanding C guest: no libc, linked at 0 (guest.ld), run as a VM's
   guest at CPL 3. It prints on its console through the VM's virtual 16550:
   each `out` to port 0x3F8 traps into its VMM (the VM's TSS has no I/O
   bitmap), which appends the byte to the VM's console. Its globals and
   string literals are at link-time addresses from 0: they work only if the
   guest really sees its memory from address 0. */

#define SERIAL 0x3F8

static inline void outb(unsigned short port, unsigned char value)
{
    __asm__ volatile ("outb %0, %1" : : "a"(value), "Nd"(port));
}

static void puts_serial(const char *s)
{
    while (*s)
        outb(SERIAL, (unsigned char)*s++);
}

static void put_decimal(unsigned int n)
{
    char digits[12];
    int i = 0;
    do {
        digits[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (i)
        outb(SERIAL, (unsigned char)digits[--i]);
}

const char *greeting = "hello from C";           /* .data: a pointer into .rodata */
unsigned int primes[] = {2, 3, 5, 7, 11, 13};    /* .data */
unsigned int calls;                               /* .bss: zero at start */

static unsigned int sum(const unsigned int *a, unsigned int n)
{
    unsigned int s = 0;
    calls++;
    for (unsigned int i = 0; i < n; i++)
        s += a[i];
    return s;
}

int main(void)
{
    puts_serial(greeting);
    puts_serial("\n");
    puts_serial("sum of primes: ");
    put_decimal(sum(primes, sizeof primes / sizeof primes[0]));
    puts_serial("\n");
    primes[0] = 100;                                /* a global written, then read back */
    puts_serial("after a store: ");
    put_decimal(sum(primes, sizeof primes / sizeof primes[0]));
    puts_serial(", calls ");
    put_decimal(calls);
    puts_serial("\n");
    return 0;
}

__attribute__((section(".text.start"), noreturn)) void _start(void)
{
    main();
    puts_serial("bye\n");
    for (;;)
        __asm__ volatile ("hlt");                   /* traps to its VMM: the VM halts */
}
