#include "backend.h"

#include "attnswap/error.h"

static const as_backend *backends[AS_DEV_CUDA + 1];

void as_backend_register(as_device_type type, const as_backend *b) { backends[type] = b; }

const as_backend *as_backend_get(as_device_type type)
{
    return (unsigned)type <= AS_DEV_CUDA ? backends[type] : NULL;
}

const as_backend *as_backend_for(const char *fn, as_device dev)
{
    const as_backend *b = as_backend_get(dev.type);
    if (!b) {
        as_error_set("%s: device %s is not available in this build", fn, as_device_name(dev));
        return NULL;
    }
    if (b->use && b->use(fn, dev.index)) return NULL;
    return b;
}
