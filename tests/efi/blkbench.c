/*
 * blkbench.efi - read throughput of vhdx.efi's Block I/O against the limit it sits on.
 *
 *     blkbench.efi VHDX_PATH PAYLOAD_OFFSET MIB RANDOM_COUNT
 *
 * Reads MIB MiB of the first disk vhdx.efi mounted (the Block I/O whose device path
 * ends in vhdx.efi's vendor node) from LBA 0 in 1 MiB requests, and the same bytes of
 * VHDX_PATH directly through the Block I/O of the partition blkbench.efi was started
 * from: file bytes [PAYLOAD_OFFSET, PAYLOAD_OFFSET + MIB MiB), which the caller knows
 * hold virtual bytes [0, MIB MiB) (a fixed image with its blocks in order).  Then
 * RANDOM_COUNT 4 KiB requests at the same pseudo-random offsets through both.  The
 * file's clusters are mapped with platform/fat.c, as the driver does.
 *
 *     blkbench.efi --direct VHDX_PATH PAYLOAD_OFFSET MIB
 *
 * reads only the file bytes, directly, into memory as large as the range: the baseline
 * of the RAM-disk copy that vhdx.efi's `ram` option makes at mount (make bench).
 *
 * A pass over the range warms the host's caches first; each measurement is repeated
 * and the best of the rounds counts.  Times come from the TSC, calibrated against
 * Stall().  Both reads are checksummed: "data match" proves they were the same bytes.
 */
#include "console.h"
#include "mount.h"
#include "fat.h"
#include "system.h"

#define MIB (1024u * 1024u)
#define SMALL 4096u
#define ROUNDS 5

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

static EFI_GUID vendor_guid = DISK_VENDOR_GUID;

struct bench {
    EFI_BLOCK_IO_PROTOCOL *vhdx;            /* vhdx.efi's disk */
    EFI_BLOCK_IO_PROTOCOL *esp;             /* the partition holding the .vhdx */
    EFI_DISK_IO_PROTOCOL *esp_disk_io;
    struct fat_extent *extents;
    uint32_t extent_count;
    uint64_t payload_offset;
    uint8_t *buffer;                        /* 1 MiB, page aligned */
    uint64_t ticks_per_ms;
};

static uint64_t parse_number(const CHAR16 *p)
{
    uint64_t v = 0;

    while (*p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

static const CHAR16 *next_word(const CHAR16 *p, CHAR16 *word, size_t size)
{
    size_t n = 0;

    while (*p == ' ')
        p++;
    while (*p && *p != ' ') {
        if (n + 1 < size)
            word[n++] = *p;
        p++;
    }
    word[n] = 0;
    return p;
}

static EFI_BLOCK_IO_PROTOCOL *find_vhdx_disk(void)
{
    EFI_HANDLE *handles;
    UINTN count;
    EFI_BLOCK_IO_PROTOCOL *found = NULL;

    if (efi_bs->LocateHandleBuffer(ByProtocol, &efi_block_io_guid, NULL, &count,
                                   &handles) != EFI_SUCCESS)
        return NULL;
    for (UINTN i = 0; i < count && !found; i++) {
        EFI_DEVICE_PATH *path, *last = NULL;

        if (efi_bs->HandleProtocol(handles[i], &efi_device_path_guid, (void **)&path))
            continue;
        for (; !IsDevicePathEnd(path); path = NextDevicePathNode(path))
            last = path;
        if (last && DevicePathType(last) == MEDIA_DEVICE_PATH &&
            DevicePathSubType(last) == MEDIA_VENDOR_DP &&
            efi_guid_equal(&((VENDOR_DEVICE_PATH *)last)->Guid, &vendor_guid))
            efi_bs->HandleProtocol(handles[i], &efi_block_io_guid, (void **)&found);
    }
    efi_free(handles);
    return found;
}

static int fat_reader(void *context, uint64_t offset, void *buffer, uint32_t length)
{
    struct bench *bench = context;

    return bench->esp_disk_io->ReadDisk(bench->esp_disk_io, bench->esp->Media->MediaId,
                                        offset, length, buffer) != EFI_SUCCESS;
}

static EFI_STATUS map_vhdx(struct bench *bench, const char *path)
{
    struct fat_volume *volume = efi_allocate(sizeof *volume);
    struct fat_file file;
    uint32_t count = 0;
    enum fat_error err;

    if (!volume)
        return EFI_OUT_OF_RESOURCES;
    err = fat_mount(volume, fat_reader, bench, 0);
    if (!err)
        err = fat_lookup(volume, path, &file);
    if (!err)
        err = fat_map(volume, &file, NULL, 0, &count);
    if (!err) {
        bench->extents = efi_allocate((count ? count : 1) * sizeof *bench->extents);
        err = bench->extents ? fat_map(volume, &file, bench->extents, count,
                                       &bench->extent_count) : FAT_E_IO;
    }
    efi_free(volume);
    if (err) {
        con_print("blkbench: %s: %s\n", path, fat_strerror(err));
        return EFI_NOT_FOUND;
    }
    return EFI_SUCCESS;
}

/* Read file bytes of the .vhdx straight from the partition, split at extent ends. */
static EFI_STATUS read_direct(struct bench *bench, uint64_t file_offset, uint8_t *buffer,
                              size_t length)
{
    uint32_t block = bench->esp->Media->BlockSize;

    while (length) {
        uint64_t at, contiguous;
        size_t piece;
        EFI_STATUS status;

        if (!fat_extent_lookup(bench->extents, bench->extent_count, file_offset, &at,
                               &contiguous))
            return EFI_END_OF_FILE;
        piece = contiguous < length ? (size_t)contiguous : length;
        status = bench->esp->ReadBlocks(bench->esp, bench->esp->Media->MediaId,
                                        at / block, piece, buffer);
        if (status != EFI_SUCCESS)
            return status;
        file_offset += piece;
        buffer += piece;
        length -= piece;
    }
    return EFI_SUCCESS;
}

static EFI_STATUS read_vhdx(struct bench *bench, uint64_t offset, uint8_t *buffer,
                            size_t length)
{
    EFI_BLOCK_IO_PROTOCOL *bio = bench->vhdx;

    return bio->ReadBlocks(bio, bio->Media->MediaId, offset / bio->Media->BlockSize,
                           length, buffer);
}

static uint64_t checksum(uint64_t sum, const uint8_t *data, size_t length)
{
    const uint64_t *words = (const uint64_t *)data;

    for (size_t i = 0; i < length / 8; i++)
        sum = (sum ^ words[i]) * 0x100000001b3ull + i;
    return sum;
}

/* One pass: sequential 1 MiB requests (random == 0) or `random` 4 KiB requests. */
static EFI_STATUS pass(struct bench *bench, bool direct, uint64_t mib, uint64_t random,
                       uint64_t *ticks, uint64_t *sum)
{
    uint64_t start = efi_ticks(), seed = 12345;
    uint64_t count = random ? random : mib;
    size_t length = random ? SMALL : MIB;

    *sum = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t offset;
        EFI_STATUS status;

        if (random) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            offset = ((seed >> 33) % (mib * MIB / SMALL)) * SMALL;
        } else {
            offset = i * MIB;
        }
        status = direct ? read_direct(bench, bench->payload_offset + offset,
                                      bench->buffer, length)
                        : read_vhdx(bench, offset, bench->buffer, length);
        if (status != EFI_SUCCESS) {
            con_print("blkbench: %s read at %llu failed: %s\n", direct ? "direct" : "vhdx",
                      (unsigned long long)offset, efi_status_text(status));
            return status;
        }
        *sum = checksum(*sum, bench->buffer, length);
    }
    *ticks = efi_ticks() - start;
    return EFI_SUCCESS;
}

/* MiB/s with one decimal, as text. */
static void rate(char *out, size_t size, const struct bench *bench, uint64_t bytes,
                 uint64_t ticks)
{
    uint64_t ms = ticks / bench->ticks_per_ms;
    uint64_t tenths = ms ? bytes * 10 * 1000 / MIB / ms : 0;

    con_format(out, size, "%llu.%llu MiB/s", (unsigned long long)(tenths / 10),
               (unsigned long long)(tenths % 10));
}

static EFI_STATUS measure(struct bench *bench, const char *name, uint64_t mib,
                          uint64_t random)
{
    uint64_t best[2] = { UINT64_MAX, UINT64_MAX }, sums[2] = { 0, 0 }, ticks, sum;
    uint64_t bytes = random ? random * SMALL : mib * MIB;
    char vhdx_rate[32], direct_rate[32];
    uint64_t ratio;
    EFI_STATUS status;

    for (unsigned round = 0; round < ROUNDS; round++) {
        for (int direct = 0; direct < 2; direct++) {
            status = pass(bench, direct, mib, random, &ticks, &sum);
            if (status != EFI_SUCCESS)
                return status;
            if (ticks < best[direct])
                best[direct] = ticks;
            sums[direct] = sum;
        }
    }
    rate(vhdx_rate, sizeof vhdx_rate, bench, bytes, best[0]);
    rate(direct_rate, sizeof direct_rate, bench, bytes, best[1]);
    ratio = best[1] * 1000 / (best[0] ? best[0] : 1);
    con_print("blkbench: %s: vhdx %s, direct %s, ratio %llu.%03llu, data %s\n", name,
              vhdx_rate, direct_rate, (unsigned long long)(ratio / 1000),
              (unsigned long long)(ratio % 1000),
              sums[0] == sums[1] ? "match" : "MISMATCH");
    return sums[0] == sums[1] ? EFI_SUCCESS : EFI_COMPROMISED_DATA;
}

/*
 * --direct: sequential 1 MiB reads of the file, directly, into memory as large as the
 * range (the way the RAM-disk copy fills its memory): the first pass into memory never
 * touched before (as the copy's is), then the best of the rounds.
 */
static EFI_STATUS measure_direct(struct bench *bench, uint64_t mib)
{
    uint64_t best = UINT64_MAX, first = 0;
    char first_rate[32], best_rate[32];
    EFI_PHYSICAL_ADDRESS memory;
    EFI_STATUS status;

    status = efi_bs->AllocatePages(AllocateAnyPages, EfiBootServicesData, mib * MIB / 4096,
                                   &memory);
    if (status != EFI_SUCCESS)
        return status;
    for (unsigned round = 0; round <= ROUNDS && status == EFI_SUCCESS; round++) {
        uint64_t start = efi_ticks(), ticks;

        for (uint64_t i = 0; i < mib && status == EFI_SUCCESS; i++)
            status = read_direct(bench, bench->payload_offset + i * MIB,
                                 (uint8_t *)(uintptr_t)memory + i * MIB, MIB);
        ticks = efi_ticks() - start;
        if (round == 0)
            first = ticks;
        else if (ticks < best)
            best = ticks;
    }
    efi_bs->FreePages(memory, mib * MIB / 4096);
    if (status != EFI_SUCCESS)
        return status;
    rate(first_rate, sizeof first_rate, bench, mib * MIB, first);
    rate(best_rate, sizeof best_rate, bench, mib * MIB, best);
    con_print("blkbench: direct sequential 1 MiB into fresh memory: %s; best of %u rounds: "
              "%s\n", first_rate, ROUNDS, best_rate);
    return EFI_SUCCESS;
}

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_LOADED_IMAGE_PROTOCOL *self;
    struct bench bench = { 0 };
    CHAR16 word[CONFIG_PATH_MAX];
    char path[CONFIG_PATH_MAX];
    const CHAR16 *args;
    uint64_t mib, random, ticks, sum;
    EFI_PHYSICAL_ADDRESS pages;
    EFI_STATUS status;
    bool direct_only = false;
    size_t n;

    efi_system_init(image, systab);
    efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&self);
    args = self->LoadOptions ? (const CHAR16 *)self->LoadOptions : (const CHAR16 *)L"";
    args = next_word(args, word, ARRAY_SIZE(word));             /* the program */
    args = next_word(args, word, ARRAY_SIZE(word));
    if (word[0] == '-' && word[1] == '-' && word[2] == 'd') {
        direct_only = true;
        args = next_word(args, word, ARRAY_SIZE(word));
    }
    for (n = 0; word[n] && n + 1 < sizeof path; n++)
        path[n] = (char)word[n];
    path[n] = '\0';
    args = next_word(args, word, ARRAY_SIZE(word));
    bench.payload_offset = parse_number(word);
    args = next_word(args, word, ARRAY_SIZE(word));
    mib = parse_number(word);
    next_word(args, word, ARRAY_SIZE(word));
    random = parse_number(word);
    if (!path[0] || !mib) {
        con_print("usage: blkbench.efi [--direct] VHDX_PATH PAYLOAD_OFFSET MIB RANDOM_COUNT\n");
        return EFI_INVALID_PARAMETER;
    }
    bench.vhdx = direct_only ? NULL : find_vhdx_disk();
    if (!bench.vhdx && !direct_only) {
        con_print("blkbench: no disk of vhdx.efi found\n");
        return EFI_NOT_FOUND;
    }
    status = efi_bs->HandleProtocol(self->DeviceHandle, &efi_block_io_guid,
                                    (void **)&bench.esp);
    if (status == EFI_SUCCESS)
        status = efi_bs->HandleProtocol(self->DeviceHandle, &efi_disk_io_guid,
                                        (void **)&bench.esp_disk_io);
    if (status != EFI_SUCCESS)
        return status;
    status = map_vhdx(&bench, path);
    if (status != EFI_SUCCESS)
        return status;
    status = efi_bs->AllocatePages(AllocateAnyPages, EfiBootServicesData, MIB / 4096,
                                   &pages);
    if (status != EFI_SUCCESS)
        return status;
    bench.buffer = (uint8_t *)(uintptr_t)pages;

    bench.ticks_per_ms = efi_ticks_per_ms();
    if (direct_only) {
        status = pass(&bench, true, mib, 0, &ticks, &sum);
        if (status == EFI_SUCCESS)
            status = measure_direct(&bench, mib);
        efi_bs->FreePages(pages, MIB / 4096);
        return status;
    }
    con_print("blkbench: %llu MiB from %s at file offset %llu; ESP IoAlign %u, "
              "vhdx IoAlign %u\n", (unsigned long long)mib, path,
              (unsigned long long)bench.payload_offset, bench.esp->Media->IoAlign,
              bench.vhdx->Media->IoAlign);
    /* Warm the host's caches so that neither side pays for the first touch. */
    status = pass(&bench, true, mib, 0, &ticks, &sum);
    if (status == EFI_SUCCESS)
        status = measure(&bench, "sequential 1 MiB", mib, 0);
    if (status == EFI_SUCCESS && random)
        status = measure(&bench, "random 4 KiB", mib, random);
    efi_bs->FreePages(pages, MIB / 4096);
    return status;
}
