FROM busybox AS deps
ARG CACHE=/root/.cache
WORKDIR /src
RUN --mount=type=cache,target=$CACHE/go-build --mount=type=cache,id=apt,target=var/cache/apt,sharing=locked,mode=0700,uid=1,gid=2 echo cached
RUN --mount=type=tmpfs,target=/scratch,size=64m --mount=type=cache,target=/ro,ro --mount=type=cache,target=./go/pkg/ echo tmpfs
FROM busybox
RUN --mount=type=bind,from=deps,source=/src,target=/deps --mount=target=/ctx --mount=type=bind,source=sub,target=/rw,rw echo bind
RUN --mount=type=cache,from=deps,source=/src,target=/seeded echo seeded
