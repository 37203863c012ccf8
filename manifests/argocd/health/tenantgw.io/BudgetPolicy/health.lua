-- Argo CD health of a tenantgw BudgetPolicy (resource.customizations.health.tenantgw.io_BudgetPolicy).
-- Runs without the string library, as Argo CD runs custom health checks.
--
-- A spent budget (state Exceeded) is Healthy: the policy does what was declared (it refuses
-- or downgrades until the period resets) and nothing in Git or the cluster is broken. Reporting
-- it Degraded would turn the platform's Application red whenever a team spends its budget and
-- fail any sync wave behind it. Spend is alerted on by the PrometheusRule, not by Argo CD.
-- A policy the operator could not apply (Accepted=False) is Degraded: the gateway refuses every
-- request in its scope until someone fixes it.
local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation or 0
if obj.status == nil or obj.status.observedGeneration == nil then
  return {status = "Progressing",
    message = "Waiting for the tenantgw operator (is the Tenant of this namespace applied?)"}
end
if obj.status.observedGeneration < generation then
  return {status = "Progressing",
    message = "Waiting for the tenantgw operator to reconcile generation " .. generation}
end
local accepted = find(obj.status.conditions, "Accepted")
if accepted == nil or accepted.status == "Unknown" then
  return {status = "Progressing", message = "Waiting for the Accepted condition"}
end
if accepted.status ~= "True" then
  return {status = "Degraded", message = (accepted.reason or "") .. ": " .. (accepted.message or "")}
end
local state = obj.status.state
if state == "Exceeded" or state == "Warning" then
  local spent = obj.status.spentUSD
  local limit = obj.spec.limitUSD
  local detail = state
  if spent ~= nil and limit ~= nil then
    detail = detail .. ": " .. spent .. " of " .. limit .. " USD spent in this " .. (obj.spec.period or "budget") .. " period"
  end
  if state == "Exceeded" then
    local action = "block"
    if obj.spec.onExceeded ~= nil and obj.spec.onExceeded.action ~= nil then
      action = obj.spec.onExceeded.action
    end
    if action == "downgrade" then
      detail = detail .. "; requests move to cost tier " .. (obj.spec.onExceeded.toCostTier or "?")
    else
      detail = detail .. "; requests in its scope are refused (402) until the period resets"
    end
  end
  return {status = "Healthy", message = detail}
end
return {status = "Healthy", message = accepted.message or ""}
