"""What tests share, by concern: archives (packages to index), events (Lambda inputs), stores (buckets and
servers), checks (what a published index must satisfy), clock (time that moves only when told)."""
