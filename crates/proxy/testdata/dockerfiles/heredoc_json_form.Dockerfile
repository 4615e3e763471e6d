FROM reg.example/a:1
RUN ["true", "<<CMD"]
FROM reg.example/b:1
CMD
