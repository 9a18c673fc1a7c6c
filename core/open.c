/*
 * open.c - opening and closing an image, in the order of the spec's checklist (digest
 * section 13): identifier and headers; the log, replayed in memory (nothing else may be
 * read before a dirty log is replayed, trap T14); region table, metadata and BAT,
 * validated through the replayed view; only then is anything written (the replay,
 * in place, for a writable open).  One file: chain.c opens a differencing disk's
 * parents on top of this.
 */
#include "disk.h"

static bool platform_complete(const struct vhdx_platform *p)
{
    return p && p->read && p->size && p->allocate && p->release;
}

static void disk_free(struct vhdx_disk *disk)
{
    void (*release)(void *, void *) = disk->file.platform.release;
    void *context = disk->file.platform.context;

    overlay_release(disk);
    write_release(disk);
    logw_release(disk);
    cache_release(disk);
    core_free(disk, disk->space.map);
    metadata_release(disk);
    region_table_release(disk);
    file_release(disk);
    release(context, disk);
}

static int open_steps(struct vhdx_disk *disk, const struct vhdx_open_options *options)
{
    size_t cache_bytes = options->cache_bytes ? options->cache_bytes
                                              : VHDX_DEFAULT_CACHE_BYTES;
    int rc;

    rc = header_load(disk);
    if (!rc)
        rc = replay_prepare(disk);
    if (!rc)
        rc = region_table_load(disk);
    if (!rc)
        rc = metadata_load(disk);
    if (!rc)
        rc = bat_setup(disk);
    if (!rc)
        rc = cache_init(disk, cache_bytes);
    if (!rc)
        rc = space_start(disk);
    if (!rc)
        rc = bat_validate(disk);
    if (!rc && disk->report.problems) {
        report_hidden_problems(disk);
        return fail(disk, VHDX_E_CHECK_FAILED, disk->report.problems, 0, NULL);
    }
    if (!rc)
        rc = replay_finish(disk, space_limit(disk));
    if (!rc)
        space_finish(disk);
    return rc;
}

static int early_failure(struct vhdx_diag *diag, enum vhdx_error code, uint64_t a,
                         const char *s)
{
    if (diag) {
        mem_zero(diag, sizeof *diag);
        diag->code = code;
        diag->a = a;
        diag->s = s;
    }
    return code;
}

int disk_open(const struct vhdx_platform *platform, const struct vhdx_open_options *options,
              struct vhdx_disk **out, struct vhdx_diag *diag)
{
    struct vhdx_disk *disk;
    bool want_write = options->flags & VHDX_OPEN_WRITABLE;
    bool check = options->flags & VHDX_OPEN_CHECK;
    int rc;

    if (out)
        *out = NULL;
    if (!out || !platform_complete(platform) ||
        (want_write && (!platform->write || !platform->flush || !platform->grow)))
        return early_failure(diag, VHDX_E_ARGUMENT, 0, "incomplete platform");
    disk = platform->allocate(platform->context, sizeof *disk);
    if (!disk)
        return early_failure(diag, VHDX_E_NOMEM, sizeof *disk, NULL);
    mem_zero(disk, sizeof *disk);
    /* Check mode never writes; read-only media means a read-only open (a dirty log is
     * replayed in memory). */
    rc = file_init(disk, platform, want_write && !check &&
                                   !(platform->flags & VHDX_PLATFORM_READ_ONLY));
    report_init(disk, check);
    if (want_write && !check && !disk->file.writable)
        note_text(disk, VHDX_LOG_INFO, "the media is read-only; opening read-only", 0, 0, NULL);
    if (!rc)
        rc = open_steps(disk, options);
    if (rc) {
        if (diag)
            mem_copy(diag, &disk->report.diag, sizeof *diag);
        disk_free(disk);
        return rc;
    }
    if (diag)
        mem_zero(diag, sizeof *diag);
    *out = disk;
    return VHDX_OK;
}

int disk_close(struct vhdx_disk *disk, struct vhdx_diag *diag)
{
    int rc = VHDX_OK;

    if (diag)
        mem_zero(diag, sizeof *diag);
    if (!disk)
        return VHDX_OK;
    if (disk->file.writable && !disk->headers.failed && !disk->logw.failed) {
        rc = vhdx_flush(disk);
        if (!rc)
            rc = logw_close(disk);
    }
    if (rc && diag)
        mem_copy(diag, &disk->report.diag, sizeof *diag);
    disk_free(disk);
    return rc;
}

const struct vhdx_diag *vhdx_last_diag(const struct vhdx_disk *disk)
{
    return &disk->report.diag;
}

void vhdx_get_info(const struct vhdx_disk *disk, struct vhdx_info *info)
{
    const struct geometry *g = &disk->geometry;
    const struct vhdx_header *h = &disk->headers.current;
    const struct bat *bat = &disk->bat;

    mem_zero(info, sizeof *info);
    info->type = g->has_parent ? VHDX_TYPE_DIFFERENCING
               : g->fixed ? VHDX_TYPE_FIXED : VHDX_TYPE_DYNAMIC;
    info->virtual_size = g->virtual_size;
    info->block_size = g->block_size;
    info->logical_sector_size = g->logical_sector_size;
    info->physical_sector_size = g->physical_sector_size;
    info->file_size = disk->file.size;
    info->used_size = disk->space.end;
    info->room_wanted = (bat->payload_blocks - bat->present - bat->partial) * g->block_size;
    info->read_only = !disk->file.writable;
    info->header_slot = disk->headers.slot;
    info->header_sequence = h->sequence;
    info->file_write_guid = h->file_write_guid;
    info->data_write_guid = h->data_write_guid;
    info->log_guid = h->log_guid;
    info->virtual_disk_id = g->virtual_disk_id;
    info->log_offset = h->log_offset;
    info->log_length = h->log_length;
    info->log_state = disk->replay.state;
    info->log_entries_replayed = disk->replay.entries;
    info->log_sequence_head = disk->replay.head_sequence;
    info->replayed_log_guid = disk->replay.guid;
    info->bat_offset = disk->regions.bat_offset;
    info->bat_length = disk->regions.bat_length;
    info->bat_entries = bat->entries;
    info->metadata_offset = disk->regions.metadata_offset;
    info->metadata_length = disk->regions.metadata_length;
    info->chunk_ratio = bat->chunk_ratio;
    info->blocks_total = bat->payload_blocks;
    info->blocks_present = bat->present;
    info->blocks_partial = bat->partial;
    info->parent_locator_entries = disk->locator.count;
    info->parent_locator_type = disk->locator.type;
    info->parent_key = disk->chain.key;
    info->parent_path = disk->chain.key ? disk->chain.path : NULL;
    info->parent_linkage2 = disk->chain.linkage2;
    info->chain_depth = disk->chain.depth;
    info->cache_pages = disk->cache.count;
    info->cache_hits = disk->cache.hits;
    info->cache_misses = disk->cache.misses;
    info->memory_in_use = disk->file.memory_in_use;
    info->memory_peak = disk->file.memory_peak;
}

int vhdx_parent_locator_entry(const struct vhdx_disk *disk, uint32_t index,
                              const char **key, const char **value)
{
    if (index >= disk->locator.count)
        return VHDX_E_RANGE;
    *key = disk->locator.pairs[index].key;
    *value = disk->locator.pairs[index].value;
    return VHDX_OK;
}
