-- Argo CD health of a tenantgw Tenant (resource.customizations.health.tenantgw.io_Tenant).
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
  return {status = "Progressing", message = "Waiting for the tenantgw operator to reconcile the Tenant"}
end
if obj.status.observedGeneration < generation then
  return {status = "Progressing",
    message = "Waiting for the tenantgw operator to reconcile generation " .. generation}
end
local ready = find(obj.status.conditions, "Ready")
if ready == nil then
  return {status = "Progressing", message = "Waiting for the Ready condition"}
end
local message = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "True" then
  local config = find(obj.status.conditions, "ConfigValid")
  if config ~= nil and config.status == "False" then
    -- Ready with reason Degraded: the gateway serves, some resources are left out.
    return {status = "Degraded", message = config.reason .. ": " .. (config.message or "")}
  end
  local enforcement = find(obj.status.conditions, "EnforcementAvailable")
  if enforcement ~= nil and enforcement.status == "False" and enforcement.reason == "StoreUnavailable" then
    return {status = "Degraded", message = enforcement.reason .. ": " .. (enforcement.message or "")}
  end
  return {status = "Healthy", message = ready.message or ""}
end
-- Ready is False (or Unknown). These heal on their own: the operator is waiting.
if ready.reason == "DeploymentProgressing" or ready.reason == "NamespaceTerminating"
    or ready.reason == "CertificatePending" then
  return {status = "Progressing", message = message}
end
if ready.status == "Unknown" then
  return {status = "Progressing", message = message}
end
-- The rest needs someone: a field to fix, a Secret to create, a namespace to hand over, a
-- store to bring back (docs/troubleshooting.md, by reason).
return {status = "Degraded", message = message}
