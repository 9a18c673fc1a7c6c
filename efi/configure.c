/*
 * configure.c - where the disk list comes from: LoadOptions (a Driver#### entry's data,
 * or a loader's), else vhdx.cfg (or the boot program's file) beside the image.
 */
#include "console.h"
#include "mount.h"

#define CONFIG_FILE_NAME "vhdx.cfg"
#define CONFIG_FILE_MAX (64u * 1024u)

struct report_context {
    const char *source;
};

static void report_config(void *context, unsigned line, const char *message)
{
    const struct report_context *report = context;

    con_print("vhdx: %s line %u: %s\n", report->source, line, message);
}

/* Read the configuration file (at most CONFIG_FILE_MAX bytes) into pool memory. */
static EFI_STATUS read_config_file(struct disk_set *set, const char *path, void **data,
                                   size_t *size)
{
    EFI_FILE_PROTOCOL *root, *file;
    EFI_FILE_INFO *info;
    UINTN info_size, length;
    EFI_STATUS status;

    status = efi_esp_open_file(&set->esp, path, EFI_FILE_MODE_READ, &root, &file);
    if (status != EFI_SUCCESS)
        goto err_open;
    status = efi_get_info(file, &efi_file_info_guid, (void **)&info, &info_size);
    if (status != EFI_SUCCESS)
        goto err_info;
    if (info->FileSize > CONFIG_FILE_MAX || (info->Attribute & EFI_FILE_DIRECTORY)) {
        status = EFI_BAD_BUFFER_SIZE;
        goto err_size;
    }
    length = (UINTN)info->FileSize;
    *data = efi_allocate(length);
    if (!*data) {
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    status = file->Read(file, &length, *data);
    if (status != EFI_SUCCESS)
        goto err_read;
    *size = length;
    efi_free(info);
    file->Close(file);
    root->Close(root);
    return EFI_SUCCESS;

err_read:
    efi_free(*data);
    *data = NULL;
err_alloc:
err_size:
    efi_free(info);
err_info:
    file->Close(file);
    root->Close(root);
err_open:
    return status;
}

static bool only_blanks(const char *text, size_t length)
{
    for (size_t i = 0; i < length; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            return false;
    return true;
}

EFI_STATUS disk_set_configure(struct disk_set *set, struct config *config,
                              const void *options, size_t size)
{
    char file_path[CONFIG_PATH_MAX];
    struct report_context report = { "LoadOptions" };
    void *file_data = NULL;
    const void *raw = options;
    const char *why;
    char *text;
    size_t length;
    EFI_STATUS status;

    con_format(set->config_source, sizeof set->config_source, "%s", report.source);
    text = efi_allocate(3 * CONFIG_FILE_MAX);
    if (!text) {
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    /* LoadOptions (a Driver#### entry's data, or a loader's) replace the file. */
    length = raw && size ? config_decode(raw, size, text, 3 * CONFIG_FILE_MAX, &why) : 0;
    if (length == (size_t)-1) {
        con_print("vhdx: LoadOptions: %s\n", why);
        status = EFI_INVALID_PARAMETER;
        goto err_decode_options;
    }
    if (only_blanks(text, length)) {
        const char *name = set->config_name ? set->config_name : CONFIG_FILE_NAME;

        why = config_resolve_path(set->directory, name, file_path, sizeof file_path);
        if (why) {
            con_print("vhdx: %s\\%s: %s\n", set->directory, name, why);
            status = EFI_INVALID_PARAMETER;
            goto err_path;
        }
        report.source = file_path;
        con_format(set->config_source, sizeof set->config_source, "%s", file_path);
        status = read_config_file(set, file_path, &file_data, &size);
        if (status != EFI_SUCCESS) {
            con_print("vhdx: %s: cannot read the disk list: %s%s\n", file_path,
                      efi_status_text(status),
                      status == EFI_BAD_BUFFER_SIZE ? " (larger than 64 KiB)" : "");
            goto err_read;
        }
        length = config_decode(file_data, size, text, 3 * CONFIG_FILE_MAX, &why);
        if (length == (size_t)-1) {
            con_print("vhdx: %s: %s\n", file_path, why);
            status = EFI_INVALID_PARAMETER;
            goto err_decode_file;
        }
    }
    config_parse(config, text, length, report_config, &report);
    if (config->loader_line && !set->takes_loader)
        report_config(&report, config->loader_line,
                      "loader= is a key of vhdxboot.efi: ignored here");
    set->verbose = config->verbose;
    if (set->verbose)
        con_print("vhdx: disk list from %s: %u disk(s), %u problem(s)\n", report.source,
                  config->disk_count, config->errors);
    if (config->disk_count == 0 && config->errors == 0)
        con_print("vhdx: %s: no image= line\n", report.source);
    status = EFI_SUCCESS;

err_decode_file:
    efi_free(file_data);
err_read:
err_path:
err_decode_options:
    efi_free(text);
err_alloc:
    return status;
}
