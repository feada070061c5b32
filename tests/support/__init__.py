"""What tests share, by concern: archives (packages to index), events (Lambda inputs), stores (buckets,
folders, wrappers), checks (what a published index must satisfy), clients (py-rattler), clock (time that
moves only when told); loaded_modules, handler_probe and bundle_check are probes for a fresh interpreter."""
