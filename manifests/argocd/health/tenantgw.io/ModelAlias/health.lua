-- Argo CD health of a tenantgw ModelAlias (resource.customizations.health.tenantgw.io_ModelAlias).
-- Runs without the string library, as Argo CD runs custom health checks.
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
if accepted.status == "True" then
  return {status = "Healthy", message = accepted.message or ""}
end
-- Not served: the rest of the tenant serves without it (docs/troubleshooting.md, by reason).
return {status = "Degraded", message = (accepted.reason or "") .. ": " .. (accepted.message or "")}
