-- wrk_leads.lua with a pause between a connection's posts (DELAY_MS), so the
-- offered load is moderate and p99 reflects service time, not a saturated queue.
dofile(os.getenv("WRK_LEADS_LUA") or "bench/wrk_leads.lua")
local pause = tonumber(os.getenv("DELAY_MS") or "0")

function delay()
  return pause
end
