ARG VERSION=0.1
FROM busybox AS build
ARG VERSION
WORKDIR /src
COPY app/ ./
RUN echo "building $VERSION" > /out

FROM busybox AS unused
RUN touch /unused

FROM scratch
COPY --from=build /out /src/app/*.go /opt/
COPY --from=0 /etc/passwd /passwd
