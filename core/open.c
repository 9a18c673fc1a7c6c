/*
 * open.c - opening and closing an image, in the order of the spec's checklist
 * (digest section 13): identifier and headers, then the log (nothing else may be read
 * before a dirty log is replayed, trap T14), then region table, metadata and BAT.
 */
#include "vhdx_int.h"

static bool platform_complete(const struct vhdx_platform *p)
{
    return p && p->read && p->size && p->allocate && p->release;
}

static void disk_free(struct vhdx_disk *disk)
{
    if (!disk)
        return;
    for (uint32_t i = 0; i < disk->locator_count; i++) {
        core_free(disk, disk->locator[i].key);
        core_free(disk, disk->locator[i].value);
    }
    core_free(disk, disk->locator);
    core_free(disk, disk->regions);
    core_free(disk, disk->bat);
    core_free(disk, disk->bat_dirty);
    core_free(disk, disk->overlay);
    core_free(disk, disk->overlay_memory);
    core_free(disk, disk->log_buffer);
    core_free(disk, disk->zero_buffer);
    disk->platform.release(disk->platform.context, disk);
}

static int open_steps(struct vhdx_disk *disk)
{
    int rc;

    rc = disk->platform.size(disk->platform.context, &disk->real_file_size);
    if (rc)
        return fail(disk, (enum vhdx_error)rc, 0, 0, "getting the file size");
    disk->file_size = disk->real_file_size;
    rc = header_load(disk);
    if (!rc)
        rc = log_replay(disk);
    if (!rc)
        rc = region_table_load(disk);
    if (!rc)
        rc = metadata_load(disk);
    if (!rc)
        rc = bat_load(disk);
    if (rc)
        return rc;
    /* Nothing past the current end is known to be zero until a grow makes it so. */
    disk->known_zero_from = disk->real_file_size;
    if (disk->problems)
        return fail(disk, VHDX_E_CHECK_FAILED, disk->problems, 0, NULL);
    return VHDX_OK;
}

int vhdx_open(const struct vhdx_platform *platform, unsigned flags,
              struct vhdx_disk **out, struct vhdx_diag *diag)
{
    struct vhdx_disk *disk;
    bool want_write = flags & VHDX_OPEN_WRITABLE;
    int rc;

    if (out)
        *out = NULL;
    if (!out || !platform_complete(platform) ||
        (want_write && (!platform->write || !platform->flush || !platform->grow))) {
        if (diag) {
            mem_zero(diag, sizeof *diag);
            diag->code = VHDX_E_ARGUMENT;
            diag->s = "incomplete platform";
        }
        return VHDX_E_ARGUMENT;
    }
    disk = platform->allocate(platform->context, sizeof *disk);
    if (!disk) {
        if (diag) {
            mem_zero(diag, sizeof *diag);
            diag->code = VHDX_E_NOMEM;
            diag->a = sizeof *disk;
        }
        return VHDX_E_NOMEM;
    }
    mem_zero(disk, sizeof *disk);
    disk->platform = *platform;
    disk->open_flags = flags;
    /* Read-only media means a read-only open: a dirty log is replayed in memory. */
    disk->writable = want_write && !(platform->flags & VHDX_PLATFORM_READ_ONLY);
    if (want_write && !disk->writable)
        note_text(disk, VHDX_LOG_INFO, "the media is read-only; opening read-only", 0, 0, NULL);

    rc = open_steps(disk);
    if (rc) {
        if (diag)
            *diag = disk->diag;
        disk_free(disk);
        return rc;
    }
    if (diag)
        mem_zero(diag, sizeof *diag);
    *out = disk;
    return VHDX_OK;
}

int vhdx_close(struct vhdx_disk *disk, struct vhdx_diag *diag)
{
    int rc = VHDX_OK;

    if (diag)
        mem_zero(diag, sizeof *diag);
    if (!disk)
        return VHDX_OK;
    if (disk->writable && !disk->write_failed) {
        rc = vhdx_flush(disk);
        if (!rc)
            rc = log_close(disk);
    }
    if (rc && diag)
        *diag = disk->diag;
    disk_free(disk);
    return rc;
}

const struct vhdx_diag *vhdx_last_diag(const struct vhdx_disk *disk)
{
    return &disk->diag;
}

void vhdx_get_info(const struct vhdx_disk *disk, struct vhdx_info *info)
{
    mem_zero(info, sizeof *info);
    info->type = disk->has_parent ? VHDX_TYPE_DIFFERENCING
               : disk->leave_blocks_allocated ? VHDX_TYPE_FIXED : VHDX_TYPE_DYNAMIC;
    info->virtual_size = disk->virtual_size;
    info->block_size = disk->block_size;
    info->logical_sector_size = disk->logical_sector_size;
    info->physical_sector_size = disk->physical_sector_size;
    info->file_size = disk->file_size;
    info->used_size = disk->alloc_end;
    info->read_only = !disk->writable;
    info->header_slot = disk->header_slot;
    info->header_sequence = disk->header.sequence;
    info->file_write_guid = disk->header.file_write_guid;
    info->data_write_guid = disk->header.data_write_guid;
    info->log_guid = disk->header.log_guid;
    info->virtual_disk_id = disk->virtual_disk_id;
    info->log_offset = disk->header.log_offset;
    info->log_length = disk->header.log_length;
    info->log_state = disk->log_state;
    info->log_entries_replayed = disk->log_entries_replayed;
    info->log_sequence_head = disk->log_head_sequence;
    info->replayed_log_guid = disk->replayed_log_guid;
    info->bat_offset = disk->bat_offset;
    info->bat_length = disk->bat_length;
    info->bat_entries = disk->bat_entries;
    info->metadata_offset = disk->metadata_offset;
    info->metadata_length = disk->metadata_length;
    info->chunk_ratio = disk->chunk_ratio;
    info->blocks_total = disk->payload_blocks;
    for (uint64_t b = 0; b < disk->payload_blocks; b++) {
        uint64_t entry = disk->bat[vhdx_bat_payload_index(b, disk->chunk_ratio)];

        info->blocks_present += (entry & BAT_STATE_MASK) == PAYLOAD_FULLY_PRESENT;
    }
    info->parent_locator_entries = disk->locator_count;
    info->parent_locator_type = disk->locator_type;
}

int vhdx_parent_locator_entry(const struct vhdx_disk *disk, uint32_t index,
                              const char **key, const char **value)
{
    if (index >= disk->locator_count)
        return VHDX_E_RANGE;
    *key = disk->locator[index].key;
    *value = disk->locator[index].value;
    return VHDX_OK;
}
