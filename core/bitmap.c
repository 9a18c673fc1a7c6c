/*
 * bitmap.c - sector bitmaps of differencing disks (see bitmap.h).
 */
#include "bitmap.h"

#include "disk.h"

#define SECTORS_PER_CHUNK (1ull << 23)
#define BITS_PER_PAGE     (PAGE_SIZE * 8ull)

/* The file offset of the bitmap byte of `sector`'s chunk, from its BAT entry. */
static int bitmap_home(struct vhdx_disk *disk, uint64_t sector, uint64_t *home)
{
    uint64_t entry;
    int rc = bat_get_bitmap(disk, sector / SECTORS_PER_CHUNK, &entry);

    if (rc)
        return rc;
    /* Validated at open: a PARTIALLY_PRESENT block's chunk has its bitmap block. */
    if ((entry & BAT_STATE_MASK) != SB_PRESENT)
        return fail(disk, VHDX_E_BITMAP_MISSING, 0, sector / SECTORS_PER_CHUNK, NULL);
    *home = entry & BAT_OFFSET_MASK;
    return VHDX_OK;
}

int bitmap_run(struct vhdx_disk *disk, uint64_t sector, uint64_t count, uint64_t *run,
               bool *present)
{
    uint64_t home, bit = sector % SECTORS_PER_CHUNK, done = 0;
    const uint8_t *page = NULL;
    uint64_t page_index = UINT64_MAX;
    int rc = bitmap_home(disk, sector, &home);

    if (rc)
        return rc;
    while (done < count) {
        uint64_t b = bit + done;
        bool set;

        if (b / BITS_PER_PAGE != page_index) {
            page_index = b / BITS_PER_PAGE;
            rc = cache_read(disk, home + page_index * PAGE_SIZE, &page);
            if (rc)
                return rc;
        }
        /* Whole bytes at once where the run goes on through them. */
        if (done && b % 8 == 0 && count - done >= 8 &&
            page[b % BITS_PER_PAGE / 8] == (*present ? 0xFF : 0x00)) {
            done += 8;
            continue;
        }
        set = page[b % BITS_PER_PAGE / 8] >> (b % 8) & 1;
        if (done == 0)
            *present = set;
        else if (set != *present)
            break;
        done++;
    }
    *run = done;
    return VHDX_OK;
}

int bitmap_set(struct vhdx_disk *disk, uint64_t sector, uint64_t count)
{
    uint64_t home, bit = sector % SECTORS_PER_CHUNK;
    int rc = bitmap_home(disk, sector, &home);

    while (!rc && count) {
        uint64_t page_index = bit / BITS_PER_PAGE;
        uint64_t in_page = min_u64(count, BITS_PER_PAGE - bit % BITS_PER_PAGE);
        uint8_t *page;

        rc = cache_modify(disk, home + page_index * PAGE_SIZE, &page);
        for (uint64_t b = bit % BITS_PER_PAGE; !rc && b < bit % BITS_PER_PAGE + in_page; b++)
            page[b / 8] |= (uint8_t)(1u << (b % 8));
        bit += in_page;
        count -= in_page;
    }
    return rc;
}
